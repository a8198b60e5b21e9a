"""Critics written the way widely used public WGAN-GP code writes them: the layer patterns
(not the code) of ResNet critics with mean-pool convolutions and LayerNorm over (C, H, W),
DCGAN critics with a sigmoid head or GroupNorm(1, C) as layer norm, ``view(-1, n)`` heads, and
1-D residual text critics with ``x + 0.3·f(x)``. Small sizes; the engine must read each as
written."""

from __future__ import annotations

from torch import nn


class MeanPoolConv(nn.Module):
    """2×2 mean pooling written as strided slices (every other row and column), then a conv."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2)

    def forward(self, x):
        pooled = (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2]
                  + x[:, :, 1::2, 1::2]) / 4
        return self.conv(pooled)


class ConvMeanPool(MeanPoolConv):
    """A conv, then the strided-slice mean pooling."""

    def forward(self, x):
        h = self.conv(x)
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2]
                + h[:, :, 1::2, 1::2]) / 4


class DownBlock(nn.Module):
    """Pre-activation residual block with LayerNorm over (C, H, W) and a pooled shortcut."""

    def __init__(self, channels_in: int, channels_out: int, size: int) -> None:
        super().__init__()
        self.shortcut = MeanPoolConv(channels_in, channels_out, 1)
        self.norm1 = nn.LayerNorm([channels_in, size, size])
        self.conv1 = nn.Conv2d(channels_in, channels_in, 3, padding=1, bias=False)
        self.norm2 = nn.LayerNorm([channels_in, size, size])
        self.conv2 = ConvMeanPool(channels_in, channels_out, 3)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        skip = self.shortcut(x)
        h = self.conv1(self.relu1(self.norm1(x)))
        h = self.conv2(self.relu2(self.norm2(h)))
        return skip + h


class LayerNormResNetCritic(nn.Module):
    """ResNet critic of the WGAN-GP paper's CIFAR style: LayerNorm blocks, ``view(-1, n)``."""

    def __init__(self, width: int = 4, size: int = 8) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.block1 = DownBlock(width, 2 * width, size)
        self.block2 = DownBlock(2 * width, 2 * width, size // 2)
        self.head = nn.Linear(2 * width * (size // 4) ** 2, 1)

    def forward(self, x):
        h = self.block2(self.block1(self.stem(x)))
        h = h.view(-1, self.head.in_features)
        return self.head(h).view(-1)


class SigmoidHeadCritic(nn.Module):
    """Conv features flattened by ``view(batch, -1)``, then Linear and Sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(4, 8, 4, 2, 1), nn.LeakyReLU(0.2))
        self.to_score = nn.Sequential(nn.Linear(8 * 2 * 2, 1), nn.Sigmoid())

    def forward(self, x):
        batch = x.size()[0]
        return self.to_score(self.features(x).view(batch, -1))


class GroupLayerNormCritic(nn.Module):
    """DCGAN critic with ``GroupNorm(1, C)`` as its layer norm and in-place LeakyReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4, 8, 4, 2, 1), nn.GroupNorm(1, 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8, 1, 2))

    def forward(self, x):
        return self.net(x)


class TextResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(True), nn.Conv1d(channels, channels, 5, padding=2),
                                  nn.ReLU(True), nn.Conv1d(channels, channels, 5, padding=2))

    def forward(self, x):
        return x + 0.3 * self.body(x)


class TextCritic(nn.Module):
    """Character-level critic over one-hot sequences ``(B, length, vocabulary)``: transposed
    to channels first, residual 1-D blocks, flattened by ``view(-1, n)``."""

    def __init__(self, vocabulary: int = 5, length: int = 6, channels: int = 4) -> None:
        super().__init__()
        self.length, self.channels = length, channels
        self.embed = nn.Conv1d(vocabulary, channels, 1)
        self.blocks = nn.Sequential(TextResBlock(channels), TextResBlock(channels))
        self.out = nn.Linear(length * channels, 1)

    def forward(self, x):
        h = self.blocks(self.embed(x.transpose(1, 2)))
        return self.out(h.view(-1, self.length * self.channels))


#: name -> (build, sample shape)
USUAL_CRITICS = {
    "layer_norm_resnet": (LayerNormResNetCritic, (3, 8, 8)),
    "sigmoid_head": (SigmoidHeadCritic, (3, 8, 8)),
    "group_layer_norm": (GroupLayerNormCritic, (3, 8, 8)),
    "text_residual": (TextCritic, (6, 5)),
}

"""Weight initialization schemes for generators and critics (``TrainConfig.init``).

- ``pytorch``: PyTorch's layer defaults (Kaiming-uniform with a = √5, i.e. U(±1/√fan_in)).
- ``he``: Kaiming-uniform for ReLU, ``U(±√(6/fan_in))``, biases 0 — the initializer of the
  WGAN-GP paper's released code for its ReLU layers.
- ``xavier``: Glorot-uniform, ``U(±√(6/(fan_in + fan_out)))``, biases 0.
- ``orthogonal``: orthogonal weight matrices (gain 1), biases 0.
- ``dcgan``: ``N(0, 0.02²)`` weights, normalization scales ``N(1, 0.02²)``, biases 0
  (Radford et al. 2016).
"""

from __future__ import annotations

import torch
from torch import nn

from fastgp.train.config import INITIALIZATIONS

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)
_NORMALIZATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def initialize_(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialize every linear/convolution (and normalization) layer of ``model`` in place."""
    if scheme not in INITIALIZATIONS:
        raise ValueError(f"unknown initialization {scheme!r}: expected one of {INITIALIZATIONS}")
    if scheme == "pytorch":
        return model
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            if scheme == "he":
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(module.weight)
            else:
                nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMALIZATIONS) and scheme == "dcgan" and module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model

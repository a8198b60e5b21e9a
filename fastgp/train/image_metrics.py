"""Image-quality metrics for GANs on the built-in digits set: class coverage and Fréchet distance.

Both metrics read generated images through a small digits classifier trained once on scikit-learn's
8×8 digits (a fixed stratified 75/25 split, fixed seed) and cached on disk:

- *class coverage*: the share of samples the classifier assigns to each digit; a generator that
  collapses onto a few modes leaves classes empty;
- *Fréchet distance* (the FID recipe with this classifier's penultimate layer in place of
  Inception): the distance between gaussians fitted to the features of generated and real images.

Images follow the package convention: float32 in [-1, 1], shape (N, 1, 8, 8); a digit with pixel
values 0..16 maps to ``pixel / 16 * 2 - 1``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastgp.train.image_data import digits
from fastgp.train.run_folder import atomic_write

# Bump whenever the architecture, the split or the training recipe changes: an older cache file
# then holds weights for a different classifier and is retrained over.
CACHE_FORMAT = 1
CACHE_FILE = "digits_classifier.pt"
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
FEATURES = 128
SPLIT_SEED = 0
TRAIN_SEED = 0
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
# The real digits are cut into two halves with this seed for the Fréchet floor.
HALVES_SEED = 0


def _split_indices(labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified 75/25 train/test split of the digits."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(labels.shape[0])
    train, test = train_test_split(indices, test_size=0.25, stratify=labels.numpy(),
                                   random_state=SPLIT_SEED)
    return train, test


def default_cache_dir() -> Path:
    """``$FASTGP_CACHE`` if set, else ``$XDG_CACHE_HOME/fastgp``, else ``~/.cache/fastgp``."""
    explicit = os.environ.get("FASTGP_CACHE")
    if explicit:
        return Path(explicit)
    # The XDG spec treats an empty variable like an unset one.
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fastgp"


class _Network(nn.Module):
    """Two 3×3 convolutions, a 2×2 max-pool, a 128-unit feature layer and the class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def _train_network(images: torch.Tensor, labels: torch.Tensor) -> _Network:
    # A private RNG state: training must not move the caller's global torch stream, and a fixed
    # seed gives the same classifier on every call. Callers may sit in a no_grad region (the
    # trainer's evaluation).
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(TRAIN_SEED)
        network = _Network()
        shuffle = torch.Generator().manual_seed(TRAIN_SEED)
        optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
        steps_per_epoch = -(-images.shape[0] // BATCH_SIZE)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS * steps_per_epoch)
        network.train()
        for _ in range(EPOCHS):
            order = torch.randperm(images.shape[0], generator=shuffle)
            for start in range(0, images.shape[0], BATCH_SIZE):
                batch = order[start:start + BATCH_SIZE]
                loss = nn.functional.cross_entropy(network(images[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    network.eval()
    return network


class DigitsClassifier:
    """A trained digits classifier: labels for images and the features the Fréchet distance uses.

    ``accuracy`` is measured on the held-out 25% of the fixed split; ``from_cache`` tells whether
    the weights were loaded from the cache file rather than trained in this call.
    """

    def __init__(self, network: _Network, accuracy: float, from_cache: bool) -> None:
        self.network = network
        self.accuracy = accuracy
        self.from_cache = from_cache

    @staticmethod
    def _check(images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"digits images must have shape (N, 1, 8, 8), got {tuple(images.shape)}")
        images = images.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(images).all():
            raise ValueError("digits images contain NaN or infinite values")
        return images

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The predicted class of each image: int64, shape (N,)."""
        return self.network(self._check(images)).argmax(dim=1)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """The penultimate-layer activations: float64, shape (N, 128)."""
        return self.network.body(self._check(images)).double().numpy()


def _read_cache(path: Path) -> tuple[_Network, float] | None:
    """The cached network and accuracy, or None (with a warning) when the file cannot be used."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {state.get('format') if isinstance(state, dict) else None!r}"
                             f" is not {CACHE_FORMAT}")
        network = _Network()
        network.load_state_dict(state["weights"])
        accuracy = float(state["accuracy"])
    except Exception as error:  # torch.load raises several types for truncated or foreign files
        warnings.warn(f"digits classifier cache {path} is unusable ({error}); retraining", stacklevel=3)
        return None
    network.eval()
    return network, accuracy


def digits_classifier(cache_dir: Path | None = None) -> DigitsClassifier:
    """The digits classifier, loaded from ``cache_dir/digits_classifier.pt`` or trained and cached.

    ``cache_dir`` defaults to :func:`default_cache_dir`. A corrupt or incompatible cache file is
    retrained over with a warning; a cache folder that cannot be written only costs a warning.
    """
    path = (cache_dir if cache_dir is not None else default_cache_dir()) / CACHE_FILE
    if path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return DigitsClassifier(*cached, from_cache=True)
    data = digits()
    images, labels = data.images, data.labels
    train, test = _split_indices(labels)
    network = _train_network(images[train], labels[train])
    with torch.no_grad():
        accuracy = float((network(images[test]).argmax(dim=1) == labels[test]).double().mean())
    state = {"format": CACHE_FORMAT, "weights": network.state_dict(), "accuracy": accuracy}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    except OSError as error:
        warnings.warn(f"cannot write the digits classifier cache {path} ({error})", stacklevel=2)
    return DigitsClassifier(network, accuracy, from_cache=False)


@dataclass(frozen=True)
class ClassCoverage:
    """Shares of samples per class.

    ``shares[k] = count_k / N``. A class is *present* when ``shares[k] >= min_fair_share / K``,
    i.e. it holds at least ``min_fair_share`` of the ``1 / K`` share a uniform generator gives it
    (the same rule as the toy sets' mode coverage), so a few stray samples do not count as a mode.
    """

    shares: list[float]
    classes_present: int
    num_classes: int
    min_share: float
    max_share: float

    def as_dict(self) -> dict[str, object]:
        return {
            "class_shares": self.shares,
            "classes_present": self.classes_present,
            "num_classes": self.num_classes,
            "min_class_share": self.min_share,
            "max_class_share": self.max_share,
        }


def class_coverage(labels: torch.Tensor, num_classes: int = NUM_CLASSES,
                   min_fair_share: float = 0.2) -> ClassCoverage:
    """Per-class shares of ``labels`` (int, shape (N,), values in [0, num_classes)); see ClassCoverage."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] == 0:
        raise ValueError(f"labels must have shape (N,) with N >= 1, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be integers in [0, {num_classes})")
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    shares = counts / labels.shape[0]
    return ClassCoverage(
        shares=[float(share) for share in shares],
        classes_present=int((shares >= min_fair_share / num_classes).sum()),
        num_classes=num_classes,
        min_share=float(shares.min()),
        max_share=float(shares.max()),
    )


def _moments(features: np.ndarray | torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must have shape (N, F), got {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a covariance, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1).reshape(
        features.shape[1], features.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's negative eigenvalues → 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between gaussians fitted to two feature sets (N_a, F) and (N_b, F), in float64.

    ``FD = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^{1/2})`` with sample means μ and unbiased sample
    covariances Σ. The trace of the matrix square root is computed in the symmetric form
    ``Tr((Σa^{1/2} Σb Σa^{1/2})^{1/2})`` (same eigenvalues as Σa Σb, but a symmetric PSD matrix),
    as the sum of square roots of its eigenvalues: real and stable for singular covariances, where
    a general ``sqrtm(Σa Σb)`` returns complex parts. The estimate is biased upward by finite sample
    counts (roughly ∝ 1/N_a + 1/N_b), so only compare distances computed with equal counts.
    """
    mean_a, cov_a = _moments(features_a, "features_a")
    mean_b, cov_b = _moments(features_b, "features_b")
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"feature dimensions differ: {mean_a.shape[0]} and {mean_b.shape[0]}")
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
    # A squared distance: rounding can leave it a hair below zero for identical sets.
    return max(distance, 0.0)


def digits_quality(samples: torch.Tensor, classifier: DigitsClassifier,
                   real: torch.Tensor | None = None) -> dict[str, object]:
    """Class coverage and Fréchet distance of generated digits, with the real-data floor.

    ``real`` (default: all 1797 built-in digits) is cut into two disjoint halves A and B with a
    fixed seed. ``frechet_distance`` is FD(samples, B); ``frechet_floor`` is FD(A', B), where A' is
    the first ``min(N, |A|)`` images of A, so that the floor is computed with the same sample counts
    as the distance it is read against (FD is biased by the sample count; with more samples than
    |A| the floor uses fewer and is slightly overstated). A generator that matches the data scores
    near the floor, not near 0.
    """
    if real is None:
        real = digits().images
    if real.shape[0] < 4:
        raise ValueError(f"real needs at least 4 images for two halves, got {real.shape[0]}")
    order = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(HALVES_SEED))
    half = real.shape[0] // 2
    half_a, half_b = real[order[:half]], real[order[half:]]
    sample_features = classifier.features(samples)
    features_b = classifier.features(half_b)
    floor_a = half_a[: min(samples.shape[0], half)]
    quality: dict[str, object] = class_coverage(classifier.predict(samples)).as_dict()
    quality.update(
        frechet_distance=frechet_distance(sample_features, features_b),
        frechet_floor=frechet_distance(classifier.features(floor_a), features_b),
        frechet_samples=samples.shape[0],
        frechet_floor_samples=floor_a.shape[0],
        frechet_reference_samples=half_b.shape[0],
        classifier_accuracy=classifier.accuracy,
    )
    return quality

"""Image and vector data sets: scikit-learn's digits, image folders and NumPy arrays.

Every image set is float32 ``(N, C, H, W)`` in [-1, 1], the range of a ``tanh`` generator: the
digits and arrays are held in memory (:class:`ImageDataset`); an image folder is read one file at a
time (:class:`ImageFolder`, a ``torch.utils.data.Dataset`` that holds the paths only), so that a
:class:`~torch.utils.data.DataLoader` with worker processes streams it. 8-bit pixels map as
``p / 255 · 2 − 1``; the digits (values 0 … 16) as ``p / 16 · 2 − 1``.
Sampling has the API of :class:`fastgp.train.data.ToyDataset`: ``n`` samples drawn uniformly with
replacement by ``torch.randint`` on the run's generator, so a seed fixes the data stream.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data
from PIL import Image

from fastgp.train.data import BUILTIN_DATASETS, TOY_DATASETS, SwissRoll, ToyDataset, toy_dataset

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARRAY_EXTENSIONS: tuple[str, ...] = (".npy", ".npz")
# Keys of a multi-array .npz that name the data, in order of preference.
NPZ_KEYS: tuple[str, ...] = ("images", "x", "data")

_GRAY_MODES = ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SIXTEEN_BIT = 65535.0  # integer pixels (modes I, I;16) map as p / 65535
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class ImageDataset:
    """``images`` float32 ``(N, C, H, W)`` in [-1, 1]; ``labels`` int64 ``(N,)`` when known."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement, shape ``(n, C, H, W)``."""
        return self.images[torch.randint(0, self.num_samples, (n,), generator=generator)]

    def resized(self, image_size: int) -> ImageDataset:
        """Every image resized to ``image_size × image_size`` (antialiased bicubic, clamped)."""
        images = F.interpolate(self.images, size=(image_size, image_size), mode="bicubic",
                               antialias=True, align_corners=False)
        # bicubic overshoots at sharp edges; the data must stay in the generator's range
        return ImageDataset(self.name, images.clamp_(-1.0, 1.0), self.labels)


@dataclass(frozen=True)
class VectorDataset:
    """``data`` float32 ``(N, D)``: points of a user array, used as they are."""

    name: str
    data: torch.Tensor

    @property
    def num_samples(self) -> int:
        return self.data.shape[0]

    @property
    def sample_shape(self) -> tuple[int]:
        return (self.data.shape[1],)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` rows drawn uniformly with replacement, shape ``(n, D)``."""
        return self.data[torch.randint(0, self.num_samples, (n,), generator=generator)]


class ImageFolder(torch.utils.data.Dataset):
    """The images of a folder, decoded one file per item: ``folder[i]`` is float32 ``(C, H, W)`` in
    [-1, 1], the ``i``-th file of :func:`load_image_folder`'s order with its pixels.

    Only the paths and what the folder scan decided (channels, size, range of float pixels) are
    held, so the set is as large as its list of paths, and it pickles small for worker processes.
    Made by :func:`scan_image_folder`.
    """

    def __init__(self, name: str, files: list[Path], gray: bool, image_size: int | None,
                 float_low: float, shape: tuple[int, int, int]) -> None:
        self.name = name
        self.files = files
        self.gray = gray
        self.image_size = image_size
        self.float_low = float_low
        self._shape = shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = torch.from_numpy(_pixels(_open_image(self.files[index]), self.gray,
                                          self.image_size, self.float_low))
        image = pixels.unsqueeze(0) if self.gray else pixels.permute(2, 0, 1).contiguous()
        return image * 2 - 1

    @property
    def num_samples(self) -> int:
        return len(self.files)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self._shape

    def batch(self, indices) -> torch.Tensor:
        """The images at ``indices``, decoded here, shape ``(len(indices), C, H, W)``."""
        return torch.stack([self[int(index)] for index in indices])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement, as :meth:`ImageDataset.sample` draws
        them (the same indices for the same generator), decoded in this process."""
        return self.batch(torch.randint(0, self.num_samples, (n,), generator=generator))

    def load(self) -> ImageDataset:
        """Every image decoded into memory: what :func:`load_image_folder` returns."""
        return ImageDataset(self.name, self.batch(range(len(self))))


Dataset = ToyDataset | SwissRoll | ImageDataset | VectorDataset | ImageFolder


def digits() -> ImageDataset:
    """scikit-learn's handwritten digits: 1797 images, ``(1797, 1, 8, 8)``, labels 0 … 9."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16 * 2 - 1
    return ImageDataset("digits", images, torch.from_numpy(bunch.target).long())


def load_image_folder(path: str | Path, image_size: int | None = None) -> ImageDataset:
    """Every image file under ``path`` (recursively, sorted by path), read with Pillow into memory.

    The set is grayscale (C = 1) when every image is (Pillow modes 1, L, I, I;16, F), RGB (C = 3)
    otherwise; an alpha channel is dropped. 8-bit pixels map as ``p / 255 · 2 − 1`` and 16-bit
    ones (modes I, I;16) as ``p / 65535 · 2 − 1``; integer pixels outside 0 … 65535 are refused.
    Float pixels (mode F, e.g. 32-bit TIFF) follow the rule of float arrays: if every float image
    of the folder lies in [0, 1] they map to [-1, 1], if they lie in [-1, 1] they are kept, and
    other values (or NaN) are refused rather than guessed at. Without ``image_size`` all images
    must have the same size; with it, each is resized to ``image_size × image_size`` (Lanczos).
    :func:`scan_image_folder` gives the same images one file at a time.
    """
    return scan_image_folder(path, image_size).load()


def scan_image_folder(path: str | Path, image_size: int | None = None) -> ImageFolder:
    """The image folder ``path`` as an :class:`ImageFolder`: the rules of
    :func:`load_image_folder`, checked by reading every file's header (and decoding only the
    integer and float images, whose pixel range is part of the rules), one file at a time."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"no images in {str(root)!r}: looked for files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )

    gray, low, first_size = True, 0.0, None
    for file in files:
        mode, size = _header(file)
        if first_size is None:
            first_size = size
        elif image_size is None and size != first_size:
            raise ValueError(
                f"images differ in size: {files[0].relative_to(root)} is {_size(first_size)} but "
                f"{file.relative_to(root)} is {_size(size)}; pass image_size to resize them all "
                "to one size"
            )
        gray = gray and mode in _GRAY_MODES
        if mode in ("I", "F"):  # the pixel range decides: decode this one (and drop it)
            image = _open_image(file)
            _check_integer_pixels([file], [image])
            low = min(low, _float_low([file], [image]))
    width, height = (image_size, image_size) if image_size is not None else first_size
    shape = (1 if gray else 3, height, width)
    return ImageFolder(root.resolve().name, files, gray, image_size, low, shape)


def _header(file: Path) -> tuple[str, tuple[int, int]]:
    """The Pillow mode and size of an image file, from its header (nothing is decoded)."""
    try:
        with Image.open(file) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {str(file)!r}: {error}") from error


def _open_image(file: Path) -> Image.Image:
    try:
        with Image.open(file) as image:
            image.load()
            # a copy in memory, so that the file is closed here (multi-frame formats keep it open)
            return image.copy()
    # what Pillow raises for bad files; DecompressionBombError for a header that claims more
    # pixels than Image.MAX_IMAGE_PIXELS allows (it would take the memory of the machine)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {str(file)!r}: {error}") from error


def _check_integer_pixels(files: list[Path], images: list[Image.Image]) -> None:
    """Mode I holds 32-bit integers; values outside the 16-bit range would be clipped silently."""
    for file, image in zip(files, images, strict=True):
        if image.mode == "I":
            low, high = image.getextrema()
            if low < 0 or high > SIXTEEN_BIT:
                raise ValueError(f"image {str(file)!r} has 32-bit integer pixels in [{low}, {high}]; "
                                 f"expected 0 … {SIXTEEN_BIT:.0f} (16-bit) or 8-bit images")


def _float_low(files: list[Path], images: list[Image.Image]) -> float:
    """The lower end of the range of the folder's float (mode F) pixels: 0 when they all lie in
    [0, 1], -1 when they all lie in [-1, 1]; other values are refused, naming a file."""
    low = 0.0
    for file, image in zip(files, images, strict=True):
        if image.mode != "F":
            continue
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ValueError(f"image {str(file)!r} has NaN or infinite float pixels")
        file_low, file_high = float(values.min()), float(values.max())
        if file_low < -1 or file_high > 1:
            raise ValueError(
                f"image {str(file)!r} has float pixels in [{file_low:g}, {file_high:g}]; float "
                "(mode F) images must lie in [0, 1] or [-1, 1] (save 0 … 255 pixels as 8-bit images)"
            )
        low = min(low, file_low)
    return 0.0 if low >= 0 else -1.0


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _pixels(image: Image.Image, gray: bool, image_size: int | None, float_low: float) -> np.ndarray:
    """The image as float32 in [0, 1]: ``(H, W)`` if ``gray`` else ``(H, W, 3)``.

    Float and integer images are read as one channel in mode F, which resizes at full precision
    (converting to L or RGB would clip 16-bit values and round floats in [0, 1] to 0 or 1); in a
    colour set that channel is repeated."""
    if image.mode == "F":
        low, span = float_low, 1.0 - float_low
    elif image.mode.startswith("I"):
        image, low, span = image.convert("F"), 0.0, SIXTEEN_BIT
    elif gray:
        image, low, span = image.convert("L"), 0.0, 255.0
    else:
        image, low, span = image.convert("RGB"), 0.0, 255.0
    if image_size is not None:
        image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.clip((np.asarray(image, dtype=np.float32) - low) / span, 0.0, 1.0)
    if not gray and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return pixels


def load_array(path: str | Path) -> ImageDataset | VectorDataset:
    """A ``.npy`` or ``.npz`` array (read without pickle) as an image or vector data set.

    A ``.npz`` must hold one array, or name it ``images``, ``x`` or ``data``. Shapes: ``(N, D)``
    vectors; ``(N, H, W)`` one-channel images; ``(N, C, H, W)`` with C in {1, 3, 4}; ``(N, H, W, C)``
    with C in {1, 3, 4} and H, W > 4 (channels last). uint8 values map as ``p / 255 · 2 − 1``.
    Other integer or float vectors are used as they are; other integer or float images must lie in
    [0, 1] (mapped to [-1, 1]) or in [-1, 1] (kept).
    """
    file = Path(path)
    if file.suffix.lower() not in ARRAY_EXTENSIONS:
        raise ValueError(f"{str(file)!r} is not a .npy or .npz file")
    if not file.is_file():
        raise ValueError(f"array file {str(file)!r} does not exist")
    try:
        if file.suffix.lower() == ".npy":
            with open(file, "rb") as handle:
                _check_claimed_size(handle, file.stat().st_size)
            array = np.load(file, allow_pickle=False)
        else:
            with np.load(file, allow_pickle=False) as archive:
                key = _npz_key(file, archive.files)
                with zipfile.ZipFile(file) as members:
                    member = members.getinfo(key + ".npy" if key + ".npy" in members.namelist()
                                             else key)
                    with members.open(member) as handle:
                        _check_claimed_size(handle, member.file_size)
                array = archive[key]
    # unreadable, truncated or pickled; BadZipFile and zlib.error: a broken .npz; MemoryError:
    # an array larger than the memory of the machine
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as error:
        raise ValueError(f"cannot read {str(file)!r}: {error}") from error
    return _array_dataset(file.stem, array, str(file))


def _check_claimed_size(handle, file_size: int) -> None:
    """Refuse a ``.npy`` (or ``.npz`` member) whose header claims more data than the file holds,
    before NumPy allocates the array the header describes (a corrupt header can claim terabytes).
    ``handle`` is at the start of the ``.npy`` data; ``file_size`` is its size in bytes."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # version 3 (rare): np.load's own checks and the MemoryError above remain
        return
    if dtype.hasobject:  # pickled: the size is unknown; np.load refuses it without pickle
        return
    claimed = math.prod(shape) * dtype.itemsize
    held = file_size - handle.tell()
    if claimed > held:
        raise ValueError(f"its header claims an array of shape {shape} and dtype {dtype} "
                         f"({claimed:,} bytes) but the file holds {held:,} bytes of data: it is "
                         "truncated or corrupt")


def _npz_key(file: Path, keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    named = [key for key in NPZ_KEYS if key in keys]
    if len(named) != 1:
        raise ValueError(
            f"{str(file)!r} holds arrays {keys}: expected exactly one array, or exactly one "
            f"named {' / '.join(NPZ_KEYS)}"
        )
    return named[0]


def _array_dataset(name: str, array: np.ndarray, source: str) -> ImageDataset | VectorDataset:
    if array.dtype.kind not in "uif":
        raise ValueError(f"{source}: unsupported dtype {array.dtype}; expected an integer or float array")
    if array.ndim < 2 or array.ndim > 4:
        raise ValueError(
            f"{source}: array of shape {array.shape}; expected (N, D) vectors or images as "
            "(N, H, W), (N, C, H, W) or (N, H, W, C)"
        )
    if array.size == 0:
        raise ValueError(f"{source}: array of shape {array.shape} is empty")
    if array.ndim == 4 and array.shape[1] not in _CHANNELS:
        if array.shape[3] not in _CHANNELS or min(array.shape[1:3]) <= 4:
            raise ValueError(
                f"{source}: cannot read shape {array.shape} as (N, C, H, W) or (N, H, W, C) "
                f"with C in {_CHANNELS} (and H, W > 4 for channels last)"
            )
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim == 3:
        array = array[:, None]

    if array.dtype == np.uint8:
        values = torch.from_numpy(np.ascontiguousarray(array)).float() / 255 * 2 - 1
    else:
        values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        nan, inf = int(values.isnan().sum()), int(values.isinf().sum())
        if nan or inf:
            raise ValueError(f"{source}: {nan} NaN and {inf} infinite value(s) (as float32)")
    if values.ndim == 2:
        return VectorDataset(name, values)

    if array.dtype != np.uint8:
        low, high = values.min().item(), values.max().item()
        if low >= 0 and high <= 1:
            values = values * 2 - 1
        elif low < -1 or high > 1:
            raise ValueError(
                f"{source}: image values lie in [{low:g}, {high:g}]; expected [0, 1] or [-1, 1] "
                "(store 0 … 255 pixels as uint8)"
            )
    return ImageDataset(name, values)


def load_dataset(spec: str, image_size: int | None = None) -> Dataset:
    """The data set named ``spec``: a toy set, ``digits``, an image folder (an
    :class:`ImageFolder`, read one file at a time), or a .npy/.npz file.

    ``image_size`` resizes images (folders with Pillow, arrays and digits with torch); toy and
    vector data have no size and reject it.
    """
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if spec in TOY_DATASETS or spec == "digits":
        dataset = toy_dataset(spec) if spec in TOY_DATASETS else digits()
    elif Path(spec).is_dir():
        return scan_image_folder(spec, image_size)
    elif Path(spec).exists():
        dataset = load_array(spec)
    else:
        raise ValueError(
            f"unknown dataset {spec!r}: expected one of {', '.join(BUILTIN_DATASETS)}, "
            "an image folder, or a .npy/.npz file"
        )
    if image_size is None:
        return dataset
    if not isinstance(dataset, ImageDataset):
        raise ValueError(f"image_size applies to image data only; {spec!r} is not image data")
    return dataset.resized(image_size)

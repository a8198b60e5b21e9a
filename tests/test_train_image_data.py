"""Image and array data load into (N, C, H, W) float32 in [-1, 1] or clear errors."""

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fastgp.train.data import SwissRoll, ToyDataset
from fastgp.train.image_data import (
    BUILTIN_DATASETS,
    ImageDataset,
    VectorDataset,
    digits,
    load_array,
    load_dataset,
    load_image_folder,
)


def _save(path, pixels, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def test_digits():
    data = digits()
    assert data.name == "digits"
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.dtype == torch.float32
    assert data.images.min() == -1 and data.images.max() == 1
    assert data.labels.dtype == torch.int64
    assert data.labels.shape == (1797,)
    assert torch.equal(data.labels.unique(), torch.arange(10))
    assert data.num_samples == 1797 and data.sample_shape == (1, 8, 8)
    # the first digit of scikit-learn's set is a 0 whose top-left pixel is 0 and row 0 col 2 is 5
    assert data.labels[0] == 0
    assert data.images[0, 0, 0, 0] == -1 and data.images[0, 0, 0, 2] == pytest.approx(5 / 16 * 2 - 1)


def test_sample_is_reproducible_and_draws_from_the_data():
    data = ImageDataset("ramp", torch.linspace(-1, 1, 10).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone())
    first = data.sample(50, torch.Generator().manual_seed(3))
    second = data.sample(50, torch.Generator().manual_seed(3))
    other = data.sample(50, torch.Generator().manual_seed(4))
    assert first.shape == (50, 1, 2, 2)
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert set(first[:, 0, 0, 0].tolist()) <= set(data.images[:, 0, 0, 0].tolist())
    vectors = VectorDataset("v", torch.arange(12.0).view(6, 2))
    drawn = vectors.sample(20, torch.Generator().manual_seed(3))
    assert vectors.sample_shape == (2,) and drawn.shape == (20, 2)
    assert torch.equal(drawn, vectors.sample(20, torch.Generator().manual_seed(3)))
    assert torch.equal(drawn[:, 1], drawn[:, 0] + 1)


def test_folder_round_trip_grayscale(tmp_path):
    pixels = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2
    _save(tmp_path / "b.png", pixels)
    _save(tmp_path / "sub" / "a.bmp", 255 - pixels)
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path)
    assert data.name == tmp_path.name
    assert data.images.shape == (2, 1, 12, 10)
    # sorted by path: "b.png" comes before "sub/a.bmp"
    assert torch.allclose(data.images[0, 0], torch.from_numpy(pixels).float() / 255 * 2 - 1)
    assert torch.allclose(data.images[1, 0], torch.from_numpy(255 - pixels).float() / 255 * 2 - 1)


def test_folder_rgb_when_any_image_is_colour(tmp_path):
    colour = np.zeros((6, 6, 3), dtype=np.uint8)
    colour[..., 0] = 255
    _save(tmp_path / "colour.png", colour)
    _save(tmp_path / "gray.jpg", np.full((6, 6), 255, dtype=np.uint8))
    data = load_image_folder(tmp_path)
    assert data.sample_shape == (3, 6, 6)
    assert torch.equal(data.images[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    # the gray image is white in all three channels (JPEG keeps a flat 255 exact)
    assert torch.equal(data.images[1], torch.ones(3, 6, 6))


def test_folder_sixteen_bit_grayscale(tmp_path):
    _save(tmp_path / "deep.png", np.array([[0, 65535], [32768, 65535]], dtype=np.uint16))
    data = load_image_folder(tmp_path)
    assert data.images.shape == (1, 1, 2, 2)
    assert data.images[0, 0, 0].tolist() == [-1.0, 1.0]
    assert data.images[0, 0, 1, 0].item() == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)


def test_folder_float_tiff_in_unit_range_is_grayscale(tmp_path):
    """Mode F (32-bit float TIFF) pixels in [0, 1] map to [-1, 1]; they used to become RGB 0."""
    pixels = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    _save(tmp_path / "a.tif", pixels)
    with Image.open(tmp_path / "a.tif") as image:
        assert image.mode == "F"
    data = load_image_folder(tmp_path)
    assert data.sample_shape == (1, 2, 2)
    assert data.images.flatten().tolist() == [-1.0, -0.5, 0.0, 1.0]


def test_folder_float_tiffs_in_signed_range_are_kept(tmp_path):
    _save(tmp_path / "a.tif", np.array([[0.0, 0.5]], dtype=np.float32))
    _save(tmp_path / "b.tif", np.array([[-1.0, 0.25]], dtype=np.float32))
    data = load_image_folder(tmp_path)  # one range for the folder: [-1, 1], as b needs it
    assert data.images.flatten().tolist() == [0.0, 0.5, -1.0, 0.25]


def test_folder_float_tiff_in_a_colour_set_is_grey_in_every_channel(tmp_path):
    _save(tmp_path / "a.tif", np.array([[0.0, 1.0]], dtype=np.float32))
    _save(tmp_path / "b.png", np.zeros((1, 2, 3), dtype=np.uint8))
    data = load_image_folder(tmp_path)
    assert data.sample_shape == (3, 1, 2)
    assert data.images[0].tolist() == [[[-1.0, 1.0]]] * 3


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.array([[0.0, 255.0]]), r"float pixels in \[0, 255\]; float \(mode F\) images must lie in "
                                   r"\[0, 1\] or \[-1, 1\]"),
        (np.array([[0.0, np.nan]]), "NaN or infinite float pixels"),
    ],
)
def test_folder_float_tiff_out_of_range_is_refused(tmp_path, pixels, message):
    _save(tmp_path / "good.tif", np.zeros((1, 2), dtype=np.float32))
    _save(tmp_path / "bad.tif", pixels.astype(np.float32))
    with pytest.raises(ValueError, match=rf"image .*bad\.tif.* has {message}"):
        load_image_folder(tmp_path)


def test_folder_32_bit_integer_pixels_beyond_16_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), "I").save(tmp_path / "deep.tif")
    with pytest.raises(ValueError, match=r"deep\.tif' has 32-bit integer pixels in \[0, 70000\]"):
        load_image_folder(tmp_path)


def test_folder_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    """Pillow refuses an image of more than 2 × MAX_IMAGE_PIXELS pixels; a limit of 8 makes a
    5×5 image one."""
    _save(tmp_path / "bomb.png", np.zeros((5, 5), dtype=np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8)
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png.*could be decompression bomb"):
        load_image_folder(tmp_path)


def test_folder_resize(tmp_path):
    _save(tmp_path / "small.png", np.full((4, 6, 3), 200, dtype=np.uint8))
    _save(tmp_path / "large.png", np.full((20, 16, 3), 200, dtype=np.uint8))
    data = load_image_folder(tmp_path, image_size=8)
    assert data.images.shape == (2, 3, 8, 8)
    assert torch.allclose(data.images, torch.full_like(data.images, 200 / 255 * 2 - 1), atol=1e-6)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match=r"no images in .*\.png, \.jpg, \.jpeg"):
        load_image_folder(empty)


def test_folder_corrupt_file(tmp_path):
    _save(tmp_path / "good.png", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path)


def test_folder_mixed_sizes(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), dtype=np.uint8))
    _save(tmp_path / "b.png", np.zeros((4, 4), dtype=np.uint8))
    _save(tmp_path / "c.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"a\.png is 4×4 but c\.png is 4×5; pass image_size"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 6, 7), (1, 6, 7)),          # (N, H, W)
        ((5, 1, 6, 7), (1, 6, 7)),       # (N, C, H, W)
        ((5, 3, 6, 7), (3, 6, 7)),
        ((5, 4, 6, 7), (4, 6, 7)),
        ((5, 6, 7, 1), (1, 6, 7)),       # (N, H, W, C)
        ((5, 6, 7, 3), (3, 6, 7)),
        ((5, 6, 7, 4), (4, 6, 7)),
    ],
)
def test_array_image_layouts(tmp_path, shape, expected):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "images.npy", array)
    data = load_array(tmp_path / "images.npy")
    assert isinstance(data, ImageDataset)
    assert data.name == "images"
    assert data.sample_shape == expected and data.num_samples == 5
    channels_last = len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] > 4
    layout = np.moveaxis(array, 3, 1) if channels_last else array.reshape(5, *expected)
    assert torch.allclose(data.images, torch.from_numpy(layout.astype(np.float32)) / 255 * 2 - 1)


def test_array_vectors(tmp_path):
    array = np.array([[1.5, -300.0], [0.0, 2.0], [7.0, 8.0]])
    np.save(tmp_path / "points.npy", array)
    data = load_array(tmp_path / "points.npy")
    assert isinstance(data, VectorDataset)
    assert data.data.dtype == torch.float32 and data.sample_shape == (2,)
    assert torch.equal(data.data, torch.from_numpy(array).float())
    np.save(tmp_path / "bytes.npy", np.array([[0, 255]], dtype=np.uint8))
    assert load_array(tmp_path / "bytes.npy").data.tolist() == [[-1.0, 1.0]]


def test_array_float_ranges(tmp_path):
    unit = np.array([[[0.0, 0.25], [0.5, 1.0]]], dtype=np.float32)
    np.save(tmp_path / "unit.npy", unit)
    assert load_array(tmp_path / "unit.npy").images.flatten().tolist() == [-1.0, -0.5, 0.0, 1.0]
    signed = np.array([[[-1.0, -0.5], [0.5, 1.0]]], dtype=np.float64)
    np.save(tmp_path / "signed.npy", signed)
    assert load_array(tmp_path / "signed.npy").images.flatten().tolist() == [-1.0, -0.5, 0.5, 1.0]
    np.save(tmp_path / "binary.npy", np.array([[[0, 1], [1, 0]]], dtype=np.int64))
    assert load_array(tmp_path / "binary.npy").images.flatten().tolist() == [-1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[[0.0, np.nan], [np.inf, -np.inf]]]), "1 NaN and 2 infinite"),
        (np.array([[np.nan, 0.0]]), "1 NaN and 0 infinite"),
        (np.array([[[0.0, 2.5], [0.0, 0.0]]]), r"lie in \[0, 2.5\]; expected \[0, 1\] or \[-1, 1\]"),
        (np.array([[[0, 255], [3, 4]]], dtype=np.int32), r"lie in \[0, 255\].*as uint8"),
        (np.ones((2, 3, 3), dtype=bool), "unsupported dtype bool"),
        (np.ones((2, 2), dtype=np.complex64), "unsupported dtype complex64"),
        (np.zeros(5), r"shape \(5,\); expected \(N, D\)"),
        (np.zeros((2, 2, 2, 2, 2)), r"shape \(2, 2, 2, 2, 2\)"),
        (np.zeros((0, 3)), "is empty"),
        (np.zeros((2, 6, 6, 5)), r"cannot read shape \(2, 6, 6, 5\)"),
        (np.zeros((2, 2, 4, 3)), r"cannot read shape \(2, 2, 4, 3\)"),
    ],
)
def test_array_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        load_array(tmp_path / "bad.npy")


def test_npz_keys(tmp_path):
    images = np.zeros((3, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "single.npz", anything=images)
    assert load_array(tmp_path / "single.npz").sample_shape == (1, 6, 6)
    np.savez(tmp_path / "named.npz", x=images, y=np.arange(3))
    assert load_array(tmp_path / "named.npz").num_samples == 3
    np.savez(tmp_path / "ambiguous.npz", train=images, test=images)
    with pytest.raises(ValueError, match=r"holds arrays \['train', 'test'\]: expected exactly one"):
        load_array(tmp_path / "ambiguous.npz")
    np.savez(tmp_path / "two_named.npz", images=images, data=images)
    with pytest.raises(ValueError, match="exactly one named images / x / data"):
        load_array(tmp_path / "two_named.npz")


def test_array_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not a .npy or .npz file"):
        load_array(tmp_path / "images.csv")
    with pytest.raises(ValueError, match="does not exist"):
        load_array(tmp_path / "missing.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"cannot read .*objects\.npy"):
        load_array(tmp_path / "objects.npy")
    (tmp_path / "garbage.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read .*garbage\.npy"):
        load_array(tmp_path / "garbage.npy")


def test_load_dataset_dispatch(tmp_path):
    assert BUILTIN_DATASETS == ("8gaussians", "25gaussians", "swissroll", "digits")
    assert isinstance(load_dataset("8gaussians"), ToyDataset)
    assert isinstance(load_dataset("swissroll"), SwissRoll)
    assert load_dataset("digits").sample_shape == (1, 8, 8)
    _save(tmp_path / "folder" / "a.png", np.zeros((6, 6), dtype=np.uint8))
    assert load_dataset(str(tmp_path / "folder")).sample_shape == (1, 6, 6)
    np.save(tmp_path / "points.npy", np.zeros((4, 3)))
    assert isinstance(load_dataset(str(tmp_path / "points.npy")), VectorDataset)
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist': expected one of 8gaussians, .*digits"):
        load_dataset("mnist")


def test_load_dataset_image_size(tmp_path):
    resized = load_dataset("digits", image_size=16)
    assert resized.images.shape == (1797, 1, 16, 16)
    assert resized.images.min() >= -1 and resized.images.max() <= 1
    assert torch.equal(resized.labels, digits().labels)
    _save(tmp_path / "folder" / "a.png", np.zeros((6, 6), dtype=np.uint8))
    assert load_dataset(str(tmp_path / "folder"), image_size=4).sample_shape == (1, 4, 4)
    with pytest.raises(ValueError, match="image_size applies to image data only"):
        load_dataset("8gaussians", image_size=8)
    with pytest.raises(ValueError, match="image_size must be >= 1"):
        load_dataset("digits", image_size=0)


def _absurd_npy(shape=(50_000_000, 2)) -> bytes:
    """A .npy file whose header claims ``shape`` (float32; 400 MB by default) but holds 16 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue() + bytes(16)


def test_npy_header_claiming_more_than_the_file_is_refused_before_allocating(tmp_path):
    (tmp_path / "claims.npy").write_bytes(_absurd_npy())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"cannot read .*claims\.npy.*header claims an array of "
                                             r"shape \(50000000, 2\).*holds 16 bytes"):
            load_array(tmp_path / "claims.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # the 400 MB the header claims were never allocated
    (tmp_path / "absurd.npy").write_bytes(_absurd_npy((10**7, 10**6)))  # 40 TB
    with pytest.raises(ValueError, match=r"absurd\.npy.*40,000,000,000,000 bytes"):
        load_array(tmp_path / "absurd.npy")


def test_npz_member_header_claiming_more_than_it_holds_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "claims.npz", "w") as archive:
        archive.writestr("x.npy", _absurd_npy((10**7, 10**6)))
    with pytest.raises(ValueError, match=r"cannot read .*claims\.npz.*header claims"):
        load_array(tmp_path / "claims.npz")


def test_broken_npz_is_refused_naming_the_file(tmp_path):
    np.savez(tmp_path / "whole.npz", x=np.zeros((10, 2), dtype=np.float32))
    whole = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*truncated\.npz.*not a zip file"):
        load_array(tmp_path / "truncated.npz")
    np.savez_compressed(tmp_path / "packed.npz", x=np.arange(1000.0).reshape(500, 2))
    packed = bytearray((tmp_path / "packed.npz").read_bytes())
    packed[120:180] = bytes(60)  # inside the deflated data
    (tmp_path / "damaged.npz").write_bytes(bytes(packed))
    with pytest.raises(ValueError, match=r"cannot read .*damaged\.npz"):
        load_array(tmp_path / "damaged.npz")

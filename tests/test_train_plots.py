"""Image grids: PNG size, tile placement, pixel values and errors; the figure of 1-D samples."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastgp.train.plots import plot_toy_samples, save_image_grid


def _read(path):
    with Image.open(path) as picture:
        return picture.mode, picture.size, np.asarray(picture)


def test_grey_grid_places_upscaled_tiles_between_borders(tmp_path):
    images = torch.full((5, 1, 8, 8), -1.0)
    images[4, 0, 0, :] = 1.0  # top row of the last tile white
    images[4, 0, 1, :] = 0.0  # mid grey: 127.5 rounds to 128
    images[4, 0, 2, :] = 3.0  # out of range: clipped to white
    path = tmp_path / "grid.png"
    save_image_grid(path, images)
    mode, size, pixels = _read(path)
    # 5 tiles → 3 per row, 2 rows; 8×8 tiles drawn at 4× (32 px) with 2 px borders.
    assert mode == "L" and size == (2 + 3 * 34, 2 + 2 * 34)
    tile = pixels[36:68, 36:68]
    assert (tile[0:4] == 255).all() and (tile[4:8] == 128).all() and (tile[8:12] == 255).all()
    assert (tile[12:] == 0).all()
    assert (pixels[0:2] == 128).all() and (pixels[:, 34:36] == 128).all()
    assert (pixels[2:34, 2:34] == 0).all()
    assert (pixels[36:68, 70:102] == 128).all()  # the sixth slot is empty
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_rgb_grid_with_explicit_layout_and_scale(tmp_path):
    images = torch.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    path = tmp_path / "rgb.png"
    path.write_bytes(b"an older grid")
    save_image_grid(path, images, nrow=2, scale=3)
    mode, size, pixels = _read(path)
    assert mode == "RGB" and size == (2 + 2 * 17, 2 + 14)
    expected = ((images[1] + 1) * 127.5).round().to(torch.uint8)
    expected = expected.repeat_interleave(3, 1).repeat_interleave(3, 2).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels[2:14, 19:34], expected)


@pytest.mark.parametrize(
    ("images", "options", "message"),
    [(torch.zeros(4, 8, 8), {}, "shape"), (torch.zeros(4, 2, 8, 8), {}, "shape"),
     (torch.zeros(0, 1, 8, 8), {}, "shape"), (torch.zeros(4, 1, 8, 8), {"nrow": 0}, "nrow"),
     (torch.full((4, 1, 8, 8), float("nan")), {}, "NaN")],
)
def test_bad_grids_are_refused(tmp_path, images, options, message):
    with pytest.raises(ValueError, match=message):
        save_image_grid(tmp_path / "grid.png", images, **options)
    assert not list(tmp_path.iterdir())


def test_one_dimensional_samples_are_drawn_as_histograms(tmp_path):
    """(N, 1) points have no second coordinate to scatter: two histograms on shared bins."""
    plot_toy_samples(tmp_path / "hist.png", torch.randn(300, 1), torch.randn(200, 1) + 3,
                     title="1-D")
    mode, size, pixels = _read(tmp_path / "hist.png")
    assert mode == "RGBA" and size == (605, 440)
    # both colours are drawn: orange (real) and blue (generated) bars
    colours = {tuple(pixel) for pixel in pixels.reshape(-1, 4)[:, :3].tolist()}
    assert any(r > 200 and b < 150 for r, g, b in colours)
    assert any(b > 180 and r < 150 for r, g, b in colours)


def test_one_dimensional_samples_of_one_value_are_drawn(tmp_path):
    """All values equal (a collapsed generator on constant data): bins around that value."""
    plot_toy_samples(tmp_path / "flat.png", torch.full((50, 1), 0.5), torch.full((50, 1), 0.5))
    assert _read(tmp_path / "flat.png")[1] == (605, 440)

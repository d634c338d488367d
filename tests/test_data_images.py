"""Image files of every common mode load as the right 8-bit RGB pixels."""
import numpy as np
import pytest
from PIL import Image

from detrx.data import load_rgb


def _save(tmp_path, image, name="image.png"):
    path = str(tmp_path / name)
    image.save(path)
    return path


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)  # [H, W] over the whole range
    path = _save(tmp_path, Image.fromarray(grey))
    assert Image.open(path).mode in ("I;16", "I")
    rgb = load_rgb(path)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    expected = np.round(grey / 257).astype(np.uint8)  # 65535 -> 255, 32768 -> 128
    assert np.array_equal(rgb[..., 0], expected)
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb == 255).mean() < 0.01  # not all white


def test_8_bit_grey(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = load_rgb(_save(tmp_path, Image.fromarray(grey, "L")))
    assert np.array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


def test_palette_uses_its_colours(tmp_path):
    palette = [10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6)
    indices = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette)
    rgb = load_rgb(_save(tmp_path, image))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [200, 100, 50]


def test_palette_with_a_transparent_entry_is_composited_over_black(tmp_path):
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    image.info["transparency"] = 1
    path = str(tmp_path / "p.png")
    image.save(path, transparency=1)
    rgb = load_rgb(path)
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [0, 0, 0]


def test_rgba_is_weighted_by_alpha(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)  # [1, 3, 4]
    rgb = load_rgb(_save(tmp_path, Image.fromarray(rgba, "RGBA")))
    assert rgb[0, 0].tolist() == [200, 100, 50]
    assert rgb[0, 1].tolist() == [0, 0, 0]
    assert rgb[0, 2].tolist() == [100, 50, 25]  # 128 / 255 of each channel, rounded


def test_grey_with_alpha(tmp_path):
    la = np.array([[[90, 255], [90, 0]]], dtype=np.uint8)  # [1, 2, 2] grey, alpha
    rgb = load_rgb(_save(tmp_path, Image.fromarray(la, "LA")))
    assert rgb[0, 0].tolist() == [90, 90, 90] and rgb[0, 1].tolist() == [0, 0, 0]


def test_jpeg_rgb(tmp_path):
    colour = np.full((8, 8, 3), (30, 140, 220), dtype=np.uint8)
    rgb = load_rgb(_save(tmp_path, Image.fromarray(colour), "x.jpg"))
    assert np.abs(rgb.astype(int) - colour).max() <= 3  # lossy


def test_not_an_image_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not pixels")
    with pytest.raises(ValueError, match="notes.png' is not a readable image"):
        load_rgb(str(path))

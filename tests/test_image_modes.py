"""Every image mode Pillow returns decodes to the right 8-bit RGB values (benchmark.core.image_io):
16-bit and float scaled, not clipped to white; alpha dropped (the colour under it kept, as CUT's
loader does); values outside a deep mode's range refused with the file's name."""
import numpy as np
import pytest
from PIL import Image

from benchmark.core.errors import DataError
from benchmark.core.image_io import decode, eight_bit, read_png
from datasets.folders import load_image

GREY16 = 32768  # mid-grey in 16 bits: 128 in 8 bits (32768 * 255 / 65535 = 127.5, rounded to even)


def _palette(mode):
    image = Image.new(mode, (4, 4))
    image.putpalette([0, 0, 0, 200, 100, 50] * 128)
    image.putdata([(1, 0)] * 16 if mode == "PA" else [1] * 16)  # colour 1, fully transparent (PA)
    return image


def _sixteen(mode, value=GREY16):
    order = ">u2" if "B" in mode else "<u2"
    return Image.frombytes(mode, (4, 4), np.full((4, 4), value, order).tobytes())


# mode -> (an image of that mode, the file format that keeps the mode or None, expected RGB)
CASES = {
    "1": (lambda: Image.new("1", (4, 4), 1), "png", (255, 255, 255)),
    "L": (lambda: Image.new("L", (4, 4), 128), "png", (128, 128, 128)),
    "LA": (lambda: Image.new("LA", (4, 4), (90, 0)), "png", (90, 90, 90)),
    "P": (lambda: _palette("P"), "png", (200, 100, 50)),
    "PA": (lambda: _palette("PA"), "tiff", (200, 100, 50)),
    "RGB": (lambda: Image.new("RGB", (4, 4), (10, 20, 30)), "png", (10, 20, 30)),
    "RGBA": (lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "png", (10, 20, 30)),
    "I;16": (lambda: _sixteen("I;16"), "png", (128, 128, 128)),
    "I;16B": (lambda: _sixteen("I;16B"), "tiff", (128, 128, 128)),
    "I;16L": (lambda: _sixteen("I;16L"), None, (128, 128, 128)),  # Pillow writes no file of it
    "I;16N": (lambda: _sixteen("I;16N"), None, (128, 128, 128)),
    "I": (lambda: Image.fromarray(np.full((4, 4), GREY16, np.int32)), "tiff", (128, 128, 128)),
    "F": (lambda: Image.fromarray(np.full((4, 4), 0.5, np.float32)), "tiff", (128, 128, 128)),
    "CMYK": (lambda: Image.new("CMYK", (4, 4), (255, 0, 0, 0)), "tiff", (0, 255, 255)),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_decodes_to_the_right_8_bit_rgb(tmp_path, mode):
    make, fmt, expected = CASES[mode]
    image = make()
    assert image.mode == mode
    if fmt is None:
        rgb = eight_bit(image).convert("RGB")  # decode() = open + eight_bit + convert
    else:
        path = tmp_path / f"image.{fmt}"
        image.save(path)
        with Image.open(path) as reopened:
            assert reopened.mode == mode          # the file really holds that mode
        rgb = decode(path)
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).reshape(-1, 3).tolist() == [list(expected)] * 16


def test_16_bit_scales_the_whole_range_and_reaches_the_datasets(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    path = tmp_path / "ramp.png"
    Image.fromarray(values).save(path)
    assert np.asarray(decode(path, "L")).tolist() == [[0, 1, 128, 255]]
    assert read_png(path, "L")[0].tolist() == [[0, 1, 128, 255]]
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((16, 16), GREY16, np.uint16)).save(grey)
    assert load_image(grey, 16).unique().tolist() == [128]  # the folder datasets' loader


@pytest.mark.parametrize("mode, value", [("F", 2.0), ("F", -0.1), ("I", 70000), ("I", -1)])
def test_values_outside_a_deep_modes_range_are_refused_not_clipped(tmp_path, mode, value):
    dtype = np.float32 if mode == "F" else np.int32
    path = tmp_path / "out_of_range.tiff"
    Image.fromarray(np.full((4, 4), value, dtype)).save(path)
    with pytest.raises(DataError, match=rf"{path}.*\({mode}\).*expected 0 to"):
        decode(path)

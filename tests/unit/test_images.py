"""Image bytes → what models take (pixels, or bytes TensorFlow decodes), for every mode and orientation a client
may send; and the limits every image is held to."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from proxy.errors import InvalidImage, PayloadTooLarge
from proxy.images import BAND_PIXELS, DecodeBudget, ImageInput, ImageLimits, to_rgb
from proxy.settings import Settings

LIMIT = 50_000_000


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode ``image`` in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode_image(data: bytes, *, max_pixels: int, max_side: int = 0) -> np.ndarray:
    """The pixels a pixel-input model gets for ``data``."""
    return ImageInput(
        data, ImageLimits.from_settings(Settings(max_image_pixels=max_pixels, max_image_side=max_side))
    ).pixels()


def test_rgb_png_round_trips_exactly() -> None:
    """A lossless RGB picture decodes to exactly its pixels, shape (h, w, 3), uint8."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    decoded = decode_image(save(Image.fromarray(pixels), "PNG"), max_pixels=LIMIT)
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize(
    ("mode", "fill", "fmt", "expected"),
    [
        ("L", 100, "PNG", (100, 100, 100)),
        ("1", 1, "PNG", (255, 255, 255)),
        ("P", 3, "PNG", None),  # palette index 3 of Pillow's default palette
        ("CMYK", (0, 255, 255, 0), "JPEG", (255, 0, 0)),
        ("RGBA", (10, 20, 30, 255), "PNG", (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), "PNG", (255, 255, 255)),  # fully transparent: the white background
        ("LA", (50, 255), "PNG", (50, 50, 50)),
    ],
)
def test_modes_become_rgb(mode: str, fill: object, fmt: str, expected: tuple[int, int, int] | None) -> None:
    """Each Pillow mode converts to RGB; alpha is composited onto white."""
    image = Image.new(mode, (8, 6), fill)  # type: ignore[arg-type]
    decoded = decode_image(save(image, fmt), max_pixels=LIMIT)
    assert decoded.shape == (6, 8, 3)
    if expected is None:
        expected = image.convert("RGB").getpixel((0, 0))  # type: ignore[assignment]
    assert np.abs(decoded[0, 0].astype(int) - np.array(expected)).max() <= 3


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    """A 16-bit grayscale PNG keeps its contrast: 65535 → 255, 32768 → 128, 256 → 1."""
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    decoded = decode_image(save(image, "PNG"), max_pixels=LIMIT)
    assert decoded[0, :, 0].tolist() == [0, 1, 128, 255]


def test_palette_with_transparency() -> None:
    """A palette image with a transparent index shows white there."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] * 256)
    decoded = decode_image(save(image, "PNG", transparency=0), max_pixels=LIMIT)
    assert decoded[0, 0].tolist() == [255, 255, 255]


def test_one_by_one_image() -> None:
    """A 1x1 picture is a valid picture."""
    assert decode_image(save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), max_pixels=LIMIT).shape == (1, 1, 3)


def test_animated_gif_answers_for_its_first_frame() -> None:
    """An animated GIF decodes to its first frame."""
    frames = [Image.new("RGB", (10, 10), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded[5, 5].tolist()[0] > 200 and decoded[5, 5].tolist()[2] < 50


def test_exif_orientation_is_applied() -> None:
    """A JPEG stored landscape with EXIF orientation 6 (rotate 90° clockwise) decodes as portrait."""
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(save(stored, "JPEG", exif=exif, quality=95), max_pixels=LIMIT)
    assert decoded.shape == (40, 20, 3)
    assert decoded[2, 10].mean() > 200  # the left edge is now the top
    assert decoded[-3, 10].mean() < 50


@pytest.mark.parametrize(
    "data",
    [
        b"not an image at all",
        b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        b'{"image": "base64..."}',
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    ],
    ids=["text", "svg", "json", "png-signature-only"],
)
def test_non_images_are_invalid(data: bytes) -> None:
    """Bytes that are not a decodable image raise ``InvalidImage``."""
    with pytest.raises(InvalidImage, match="cannot decode image"):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    """A file cut short is ``InvalidImage``, not a partial picture."""
    pixels = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = save(Image.fromarray(pixels), fmt)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_empty_body_is_invalid() -> None:
    """No bytes at all is ``InvalidImage`` saying the body is empty."""
    with pytest.raises(InvalidImage, match="empty image"):
        decode_image(b"", max_pixels=LIMIT)


def test_pixel_limit_is_checked_from_the_header() -> None:
    """An image over ``max_pixels`` raises ``PayloadTooLarge`` with its size and the limit."""
    data = save(Image.new("L", (200, 100)), "PNG")
    with pytest.raises(PayloadTooLarge, match=r"200x100 = 20000 pixels; the limit is 19999"):
        decode_image(data, max_pixels=19_999)
    assert decode_image(data, max_pixels=20_000).shape == (100, 200, 3)


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    """A 4000x3000 JPEG with max_side 1024 decodes at 1/4 scale (1000x750), close to a full decode scaled down."""
    from demo_model import random_scene

    image, _ = random_scene(seed=3, size=(4000, 3000))
    data = save(image, "JPEG", quality=90)
    reduced = decode_image(data, max_pixels=LIMIT, max_side=1024)
    assert reduced.shape == (750, 1000, 3)
    full = decode_image(data, max_pixels=LIMIT)
    assert full.shape == (3000, 4000, 3)
    scaled = np.asarray(Image.fromarray(full).resize((1000, 750), Image.Resampling.BILINEAR), dtype=np.int16)
    assert np.abs(reduced.astype(np.int16) - scaled).mean() < 3


@pytest.mark.parametrize(
    ("size", "expected"), [((2048, 100), (50, 1024, 3)), ((100, 3000), (1024, 34, 3)), ((1100, 800), (745, 1024, 3))]
)
def test_other_formats_are_scaled_to_max_side(size: tuple[int, int], expected: tuple[int, int, int]) -> None:
    """Non-JPEG images larger than max_side are resized to fit, aspect kept; smaller ones are left alone."""
    data = save(Image.new("RGB", size, (10, 200, 30)), "PNG")
    decoded = decode_image(data, max_pixels=LIMIT, max_side=1024)
    assert decoded.shape == expected
    assert decoded[0, 0].tolist() == [10, 200, 30]
    assert decode_image(data, max_pixels=LIMIT, max_side=4096).shape == (size[1], size[0], 3)


@pytest.mark.parametrize(
    ("size", "draft"),
    [((4000, 3000), (1000, 750)), ((3000, 4000), (750, 1000)), ((2000, 1500), (1000, 750)), ((1100, 800), None)],
)
def test_draft_size_takes_the_cheapest_scale_near_the_limit(
    size: tuple[int, int], draft: tuple[int, int] | None
) -> None:
    """The JPEG draft is the smallest DCT reduction still within 10% of MAX_IMAGE_SIDE, never a big loss."""
    from proxy.images import draft_size

    assert draft_size(size, 1024) == draft
    assert draft_size(size, 0) is None


def _image_input(data: bytes, **limits: object) -> ImageInput:
    # The settings' limits, with the test's own in place of some.
    return ImageInput(data, dataclasses.replace(ImageLimits.from_settings(Settings()), **limits))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "fmt", "extra"),
    [
        (Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG", {}),
        (Image.new("L", (64, 48), 90), "JPEG", {}),
        (Image.new("RGB", (64, 48), (10, 200, 30)), "PNG", {}),
        (Image.new("L", (64, 48), 90), "PNG", {}),
    ],
    ids=["rgb-jpeg", "grey-jpeg", "rgb-png", "grey-png"],
)
def test_bytes_tensorflow_reads_are_forwarded_as_sent(image: Image.Image, fmt: str, extra: dict[str, object]) -> None:
    """Upright 8-bit RGB or grey JPEG and PNG within max_side go to an encoded-input model byte for byte."""
    data = save(image, fmt, **extra)
    prepared = _image_input(data, max_side=1024)
    assert prepared.forwards_as_sent
    assert prepared.encoded() == (data, fmt.lower())


@pytest.mark.parametrize(
    ("image", "fmt", "extra"),
    [
        (Image.new("RGBA", (64, 48), (10, 200, 30, 128)), "PNG", {}),
        (Image.new("P", (64, 48), 3), "PNG", {"transparency": 3}),
        (Image.new("I;16", (64, 48), 40000), "PNG", {}),
        (Image.new("CMYK", (64, 48), (0, 50, 100, 0)), "JPEG", {}),
        (Image.new("RGB", (64, 48), (10, 200, 30)), "WEBP", {"lossless": True}),
        (Image.new("RGB", (64, 48), (10, 200, 30)), "TIFF", {}),
        (Image.new("RGB", (64, 48), (10, 200, 30)), "GIF", {}),
        (Image.new("RGB", (64, 48), (10, 200, 30)), "BMP", {}),
        (Image.new("RGB", (2000, 1000), (10, 200, 30)), "PNG", {}),
    ],
    ids=["rgba", "palette-alpha", "16-bit", "cmyk-jpeg", "webp", "tiff", "gif", "bmp", "over-max-side"],
)
def test_other_images_are_reencoded_as_lossless_png_of_the_pixels(
    image: Image.Image, fmt: str, extra: dict[str, object]
) -> None:
    """What TensorFlow's decoder may not take, or what must be scaled, becomes a PNG holding exactly the pixels a
    pixel-input model would get."""
    prepared = _image_input(save(image, fmt, **extra), max_side=1024)
    assert not prepared.forwards_as_sent
    encoded, image_format = prepared.encoded()
    assert image_format == "png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded))), prepared.pixels())


def test_exif_rotated_jpeg_is_reencoded_upright() -> None:
    """A JPEG with EXIF orientation 6 is re-encoded upright: TensorFlow's decoder ignores EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = _image_input(save(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif), max_side=1024)
    assert prepared.size == (20, 40)
    assert not prepared.forwards_as_sent
    assert Image.open(io.BytesIO(prepared.encoded()[0])).size == (20, 40)


def test_picture_is_full_size_and_pixels_are_scaled_from_it() -> None:
    """picture() is the full upright picture; pixels() then fit max_side, scaled from it."""
    prepared = _image_input(save(Image.new("RGB", (2048, 1024), (1, 2, 3)), "PNG"), max_side=512)
    assert prepared.picture().size == (2048, 1024)
    assert prepared.pixels().shape == (256, 512, 3)
    assert prepared.has_picture


@pytest.mark.parametrize(("size", "ok"), [((5000, 100), True), ((5001, 100), False), ((1, 60), False)])
def test_aspect_limit(size: tuple[int, int], ok: bool) -> None:
    """An image whose long side is more than MAX_IMAGE_ASPECT times its short side is a 413 from its header."""
    data = save(Image.new("1", size), "PNG")
    if ok:
        assert _image_input(data, max_aspect=50.0).size == size
    else:
        with pytest.raises(PayloadTooLarge, match="MAX_IMAGE_ASPECT"):
            _image_input(data, max_aspect=50.0)


def test_budget_refuses_an_image_that_could_never_fit() -> None:
    """An image whose decoding needs more than the whole budget is a 413 naming DECODE_MEMORY_MB."""
    budget = DecodeBudget(1_000_000, wait_s=0.1)
    prepared = _image_input(save(Image.new("RGB", (500, 500)), "PNG"), budget=budget)
    with pytest.raises(PayloadTooLarge, match="DECODE_MEMORY_MB"):
        prepared.pixels()
    assert budget.used_bytes == 0


def test_budget_waits_then_refuses_with_503() -> None:
    """While the budget is held, a decode that does not fit waits, then is refused as Overloaded (503)."""
    from proxy.errors import Overloaded

    budget = DecodeBudget(16_000_000, wait_s=0.05)
    prepared = _image_input(save(Image.new("RGB", (300, 300)), "PNG"), budget=budget)
    assert 8_000_000 < prepared.decoding_bytes((300, 300)) < 10_000_000  # the slack, and 8 bytes a pixel
    with budget.reserve(8_000_000, "another image"), pytest.raises(Overloaded):
        prepared.pixels()
    assert prepared.pixels().shape == (300, 300, 3)  # once released, it decodes
    assert budget.used_bytes == 0


def exif_entry(kind: int, count: int, value: bytes) -> bytes:
    """An EXIF segment's bytes whose one entry is the orientation, stored as TIFF type ``kind`` (its 4 value bytes
    in line, or an offset to ``value`` after the directory)."""
    inline = len(value) <= 4
    field = value.ljust(4, b"\0") if inline else struct.pack("<L", 26)
    directory = struct.pack("<LH", 8, 1) + struct.pack("<HHL", 0x0112, kind, count) + field + struct.pack("<L", 0)
    return b"Exif\0\0II*\0" + directory + (b"" if inline else value)


# Orientations as a client may store them: what Pillow turns for (by equality, as exif_transpose looks it up) and
# what it ignores.
ODD_ORIENTATIONS = {
    "float-6": exif_entry(11, 1, struct.pack("<f", 6.0)),
    "float-inf": exif_entry(11, 1, struct.pack("<f", float("inf"))),
    "float-nan": exif_entry(11, 1, struct.pack("<f", float("nan"))),
    "double-inf": exif_entry(12, 1, struct.pack("<d", float("inf"))),
    "ascii": exif_entry(2, 4, b"abc\0"),
    "rational-8": exif_entry(5, 1, struct.pack("<LL", 16, 2)),
    "long-3": exif_entry(4, 1, struct.pack("<L", 3)),
    "two-shorts": exif_entry(3, 2, struct.pack("<HH", 6, 6)),
    "short-9": exif_entry(3, 1, struct.pack("<H", 9)),
    "short-0": exif_entry(3, 1, struct.pack("<H", 0)),
}


def pillows_upright(data: bytes) -> np.ndarray:
    """The oracle: the picture as Pillow turns it upright (ImageOps.exif_transpose), in RGB."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


STORED = Image.fromarray(np.random.default_rng(5).integers(0, 256, size=(20, 40, 3), dtype=np.uint8))


@pytest.mark.filterwarnings("ignore:Metadata Warning")  # the oracle's: Pillow warns of the two values it skips
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("name", sorted(ODD_ORIENTATIONS))
def test_odd_orientation_tags_are_read_as_pillow_reads_them(fmt: str, name: str) -> None:
    """An orientation stored as a float, a rational, text, two values or out of range is applied when Pillow applies
    it and ignored when Pillow ignores it: never a failed request (a FLOAT infinity was a 500)."""
    data = save(STORED, fmt, exif=ODD_ORIENTATIONS[name], **({"lossless": True} if fmt == "WEBP" else {}))
    image = ImageInput(data, ImageLimits.from_settings(Settings(max_image_side=0)))
    expected = pillows_upright(data)
    assert image.size == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(image.pixels(), expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(10))
def test_every_orientation_of_every_format_is_pillows(fmt: str, orientation: int) -> None:
    """The upright size and pixels are Pillow's for each stored orientation, in each format that carries one. A
    TIFF is turned by Pillow itself as it loads (its size already upright): turned once, not twice."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, object] = {"tiffinfo": {0x0112: orientation}} if fmt == "TIFF" else {"exif": exif}
    if fmt in ("JPEG", "WEBP"):
        options.update(quality=95) if fmt == "JPEG" else options.update(lossless=True)
    data = save(STORED, fmt, **options)
    image = ImageInput(data, ImageLimits.from_settings(Settings(max_image_side=0)))
    expected = pillows_upright(data)
    assert image.size == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(image.pixels(), expected)
    turned = orientation in (5, 6, 7, 8)
    assert image.size == ((20, 40) if turned else (40, 20))


# Run in a process of its own: a picture of each mode decoded (pixels, then the full picture) while the high-water
# mark of its memory is watched, against what the decode reserved of the budget.
_PEAK_SCRIPT = r"""
import ctypes, io, json, sys
import numpy as np
from PIL import Image
from proxy.images import BAND_PIXELS, DecodeBudget, ImageInput, ImageLimits, to_rgb
from proxy.settings import Settings

WIDTH, HEIGHT = 3000, 2000
ramp = np.tile(np.arange(WIDTH, dtype=np.int64) * 21, (HEIGHT, 1))
gray = Image.fromarray((ramp % 256).astype(np.uint8))
rgb = Image.merge("RGB", (gray, gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gray))
PICTURES = {
    "RGB-JPEG": (rgb, "JPEG", {}),
    "RGB-PNG": (rgb, "PNG", {}),
    "RGB-JPEG-progressive": (rgb, "JPEG", {"progressive": True}),
    "RGB-JPEG-progressive-444": (rgb, "JPEG", {"progressive": True, "subsampling": 0}),
    "L-JPEG-progressive": (gray, "JPEG", {"progressive": True}),
    "CMYK-JPEG-progressive": (rgb.convert("CMYK"), "JPEG", {"progressive": True}),
    "CMYK-JPEG": (rgb.convert("CMYK"), "JPEG", {}),
    "RGBA-PNG": (rgb.convert("RGBA"), "PNG", {}),
    "LA-PNG": (gray.convert("LA"), "PNG", {}),
    "P-transparent-PNG": (rgb.convert("P"), "PNG", {"transparency": 0}),
    "I16-PNG": (Image.fromarray((ramp % 65536).astype(np.uint16)), "PNG", {}),
    "I32-TIFF": (Image.fromarray(ramp.astype(np.int32)), "TIFF", {}),
    "F-TIFF": (Image.fromarray((ramp % 300).astype(np.float32)), "TIFF", {}),
}
libc = ctypes.CDLL("libc.so.6")

class Recording(DecodeBudget):
    most = 0
    def reserve(self, nbytes, what):
        self.most = max(self.most, nbytes)
        return super().reserve(nbytes, what)

def status(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) * 1024

out = {}
for name, (picture, fmt, options) in PICTURES.items():
    buffer = io.BytesIO()
    picture.save(buffer, fmt, compress_level=1, **options) if fmt == "PNG" else picture.save(buffer, fmt, **options)
    data = buffer.getvalue()
    for method in ("pixels", "picture"):
        budget = Recording(2**40, 1.0)
        image = ImageInput(data, ImageLimits.from_settings(Settings(), budget))
        libc.malloc_trim(0)
        start = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from here
        getattr(image, method)()
        out[f"{name} {method}"] = (status("VmHWM") - start, budget.most)
        del image
print(json.dumps(out))
"""


def test_decoding_holds_no_more_than_it_reserves_in_any_mode() -> None:
    """Every mode's decode, its RGB conversion and fitting included, stays within what it reserved of
    DECODE_MEMORY_MB: measured as the process's memory high-water mark. A 16-bit grayscale PNG held 21 bytes a pixel
    (numpy's int64 copies), an RGBA one 20 (its RGBA copy, background and composite), against 7 reserved; a
    progressive JPEG decoded at half scale held 2-3 times its reservation (libjpeg's coefficients of the whole
    picture)."""
    command = [sys.executable, "-c", _PEAK_SCRIPT]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    over = {case: (peak, reserved) for case, (peak, reserved) in measured.items() if peak > reserved}
    assert not over, over


def whole_picture_rgb(image: Image.Image) -> np.ndarray:
    """The oracle for the banded conversions: each mode's rule applied to the whole picture at once."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return np.asarray(
            Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        )
    values = np.asarray(image)
    if image.mode == "F":
        gray = np.clip(values, 0, 255).astype(np.uint8)
    else:
        wide = values.astype(np.int64)
        gray = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8) if wide.max() > 255 else wide.astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


_RNG = np.random.default_rng(9)
_TALL = (500, 1400)  # several bands of BAND_PIXELS


@pytest.mark.parametrize(
    "picture",
    [
        Image.fromarray(_RNG.integers(0, 65536, _TALL[::-1], dtype=np.uint16)),
        Image.frombytes("I;16B", _TALL, _RNG.integers(0, 65536, _TALL[::-1], dtype=np.uint16).astype(">u2").tobytes()),
        Image.fromarray(_RNG.integers(0, 200, _TALL[::-1], dtype=np.uint16)),  # no value over 255: not scaled
        Image.fromarray(np.vstack([np.full((700, 500), 100, np.uint16), np.full((700, 500), 60_000, np.uint16)])),
        Image.fromarray(_RNG.integers(-70_000, 140_000, _TALL[::-1], dtype=np.int32)),
        Image.fromarray((_RNG.random(_TALL[::-1]) * 400 - 50).astype(np.float32)),
        Image.fromarray(_RNG.integers(0, 256, (*_TALL[::-1], 4), dtype=np.uint8)),
        Image.fromarray(_RNG.integers(0, 256, (*_TALL[::-1], 4), dtype=np.uint8)).convert("LA"),
        Image.fromarray(_RNG.integers(0, 256, (*_TALL[::-1], 4), dtype=np.uint8)).convert("RGBa"),
    ],
    ids=["I;16", "I;16B", "I;16-small", "I;16-dark-top", "I", "F", "RGBA", "LA", "RGBa"],
)
def test_banded_conversions_give_the_whole_pictures_pixels(picture: Image.Image) -> None:
    """Alpha and wide grayscale converted a band of rows at a time give exactly what converting the whole picture
    at once gives (the scale decided on the whole picture's largest value, not one band's); I;16B, which Pillow
    reads from a big-endian TIFF and takes no extrema of, included."""
    assert picture.width * picture.height > 2 * BAND_PIXELS
    np.testing.assert_array_equal(np.asarray(to_rgb(picture)), whole_picture_rgb(picture))


def test_a_palette_with_a_transparent_index_is_white_there_in_every_band() -> None:
    """A tall palette picture with a transparent index: the banded composite keeps the transparency in every band."""
    picture = Image.fromarray(_RNG.integers(0, 256, (*_TALL[::-1], 3), dtype=np.uint8)).convert("P")
    picture.info["transparency"] = 3
    np.testing.assert_array_equal(np.asarray(to_rgb(picture)), whole_picture_rgb(picture))

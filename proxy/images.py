"""Request image bytes → what a model takes: RGB pixels, or encoded bytes its own decoder reads. No I/O.

``ImageInput(data, limits)`` reads only the header at once (format, size, EXIF orientation), so a bad image, a
decompression bomb or an absurd shape is refused before any pixel is decoded. The work is done on demand, once:

- ``pixels()``: uint8 RGB ``(h, w, 3)``, EXIF-oriented, scaled to fit ``max_side`` (JPEGs decoded at a reduced DCT
  scale to begin with), for ``image_tensor`` and ``float_image_tensor`` models;
- ``encoded()``: bytes for ``encoded_image_string_tensor`` and ``tf_example`` models. The bytes as sent when
  TensorFlow's decoder reads them as they are (8-bit RGB or grey JPEG and PNG, upright, within ``max_side``), else
  a lossless PNG of ``pixels()``: TensorFlow ignores EXIF orientation and reads neither WebP nor TIFF nor 16-bit;
- ``picture()``: the full-size upright RGB picture, to draw on, and to cut tiles from;
- ``view(box)``: a region of the upright picture as a model sees it (``Crop``: its pixels fitted to ``max_side``,
  or a lossless PNG of them). A region of a picture not decoded in full is decoded at the JPEG draft scale that
  still gives the region its ``max_side``, so a region of interest stays cheap and gains the resolution it needs.

``ImageInput`` and ``Crop`` are both a ``ModelImage``: what backends ask for pixels or bytes.
Decoding holds memory only within a per-process ``DecodeBudget``; an image that alone would exceed it is a 413.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from proxy.errors import InvalidImage, Overloaded, PayloadTooLarge
from proxy.jpeg import jpeg_header
from proxy.settings import Settings

# Alpha is composited onto white: transparent regions of a logo or a screenshot are "nothing", and white reads
# as nothing to a detector trained on photographs more often than black does.
_BACKGROUND = (255, 255, 255)
# What Pillow's decoders raise for bytes they cannot read (a plugin may even say NotImplementedError).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    NotImplementedError,
    struct.error,
    zlib.error,
)
# Pillow modes TensorFlow's decode_image reads as they are from a JPEG or PNG (channels=3 turns grey into RGB).
_TF_READS = {"JPEG": frozenset({"RGB", "L"}), "PNG": frozenset({"RGB", "L"})}
# Upper bound on decoding's working memory per decoded pixel: the decoded pixel (at most 4 bytes in any mode
# the decoder produces) plus its RGB conversion (4: Pillow keeps RGB as 4 bytes a pixel). The conversions that need
# more (alpha, wide grayscale) work a band of rows at a time (``to_rgb``), within ``BAND_BYTES_PER_PIXEL`` more for
# each pixel of the band.
DECODE_BYTES_PER_PIXEL = 8
# The picture fitted to max_side: Pillow's resized copy (4 bytes a pixel) and numpy's array of it (3).
FITTED_BYTES_PER_PIXEL = 7
# The decoder's own buffers and the allocator's rounding, for each decode.
DECODE_SLACK_BYTES = 8 * 2**20
# Pixels a banded conversion works on at a time, and the most it holds for each beyond the picture and its RGB
# result (a band's crop, its RGBA form, the white background, the composite and its RGB: 4 bytes each, and slack).
BAND_PIXELS = 1 << 18
BAND_BYTES_PER_PIXEL = 24
# A JPEG may decode this much below max_side when that lets it use a cheaper DCT scale: a 4000x3000 photo
# decodes at 1/4 (1000x750, a few ms) instead of at 1/2 (2000x1500) followed by a resize to 1024x768.
DRAFT_SLACK = 0.9


Box = tuple[int, int, int, int]  # (x_min, y_min, x_max, y_max) in pixels of the upright, full-size picture


class ModelImage(Protocol):
    """What a model is given: a request image, or a region of one."""

    def pixels(self) -> np.ndarray:
        """uint8 RGB ``(h, w, 3)``, upright, fitted to ``max_side``."""
        ...

    def encoded(self) -> tuple[bytes, str]:
        """Bytes TensorFlow's image decoder reads as ``pixels()``, and their format (jpeg, png)."""
        ...


class DecodeBudget:
    """The bytes of decoding work a process allows at once; a decode waits for room, within a bound."""

    def __init__(self, limit_bytes: int, wait_s: float) -> None:
        self.limit_bytes = limit_bytes
        self._wait_s = wait_s
        self._used = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget while the block runs: 413 if it could never fit, 503 if none frees up."""
        if nbytes > self.limit_bytes:
            raise PayloadTooLarge(
                f"{what} needs about {nbytes // 2**20} MiB to decode; the limit is "
                f"{self.limit_bytes // 2**20} MiB (DECODE_MEMORY_MB)"
            )
        with self._room:
            if not self._room.wait_for(lambda: self._used + nbytes <= self.limit_bytes, timeout=self._wait_s):
                raise Overloaded("the server is busy decoding other images; try again shortly", retry_after_s=1)
            self._used += nbytes
        try:
            yield
        finally:
            with self._room:
                self._used -= nbytes
                self._room.notify_all()

    @property
    def used_bytes(self) -> int:
        """Bytes reserved right now."""
        return self._used


@dataclass(frozen=True)
class ImageLimits:
    """The bounds every request image is held to (``from_settings``: the settings own their values)."""

    max_pixels: int
    max_side: int  # the model input's longer side; 0 keeps full resolution
    max_aspect: float  # longer side over shorter side
    budget: DecodeBudget | None = None  # None: decoding memory is not counted

    @classmethod
    def from_settings(cls, settings: Settings, budget: DecodeBudget | None = None) -> ImageLimits:
        """The limits ``settings`` set (MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_IMAGE_ASPECT), counted in ``budget``."""
        return cls(settings.max_image_pixels, settings.max_image_side, settings.max_image_aspect, budget)


class ImageInput:
    """One request image: its header read at once, its pixels or encoded form produced on demand (once)."""

    def __init__(self, data: bytes, limits: ImageLimits) -> None:
        if not data:
            raise InvalidImage("empty image: send the image's bytes")
        self.data = data
        self.limits = limits
        self.decode_s = 0.0
        self._pixels: np.ndarray | None = None
        self._picture: Image.Image | None = None
        self._encoded: tuple[bytes, str] | None = None
        scanned = jpeg_header(data, Image.MAX_IMAGE_PIXELS)  # a plain JPEG's header, read without Pillow
        orientation: object
        if scanned is not None:
            self.mode, self.stored_size, orientation, self._progressive = scanned
            self.format, self._transparent = "JPEG", False
        else:
            try:
                with _decoding():
                    header = Image.open(io.BytesIO(data))
            except PayloadTooLarge:  # Pillow's own bomb check, at twice its MAX_IMAGE_PIXELS: the limit is ours
                raise PayloadTooLarge(
                    f"image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; the limit is "
                    f"{limits.max_pixels} (MAX_IMAGE_PIXELS)"
                ) from None
            self.format, self.mode, self.stored_size = header.format or "?", header.mode, header.size
            self._transparent = "transparency" in header.info
            self._progressive = "progressive" in header.info
        _check_shape(*self.stored_size, limits)  # before anything else is read: a bomb stops here
        if scanned is None:
            with _decoding():
                orientation = _orientation(header)
        self.orientation = upright_turn(orientation)
        width, height = self.stored_size
        # Orientations 5-8 swap the axes: the size the client sees is the upright one.
        self.size = (height, width) if self.orientation in (5, 6, 7, 8) else (width, height)

    # -- what backends ask for --------------------------------------------------------------------------------

    def pixels(self) -> np.ndarray:
        """uint8 RGB ``(h, w, 3)``, upright, scaled to fit ``max_side``."""
        if self._pixels is None:
            started = time.perf_counter()
            if self._picture is not None:
                self._pixels = _fit(self._picture, self.limits.max_side)
            else:
                draft = draft_size(self.stored_size, self.limits.max_side) if self.format == "JPEG" else None
                with self._reserve(draft or self.stored_size):
                    self._pixels = _fit(_upright_rgb(self.data, draft), self.limits.max_side)
            self.decode_s += time.perf_counter() - started
        return self._pixels

    def encoded(self) -> tuple[bytes, str]:
        """Bytes TensorFlow's image decoder reads as the upright, scaled picture, and their format (jpeg, png)."""
        if self._encoded is None:
            if self.forwards_as_sent:
                self._encoded = (self.data, self.format.lower())
            else:
                self._encoded = (self.png(self.pixels()), "png")
        return self._encoded

    def picture(self, *, counted: bool = True) -> Image.Image:
        """The full-size upright RGB picture (to draw detections on, to cut tiles from). ``counted=False``: the
        caller holds the decoding's share of the budget already."""
        if self._picture is None:
            started = time.perf_counter()
            with self._reserve(self.stored_size) if counted else _nothing():
                self._picture = _upright_rgb(self.data, None)
            self.decode_s += time.perf_counter() - started
        return self._picture

    @property
    def whole(self) -> Box:
        """The whole upright picture as a box."""
        return (0, 0, *self.size)

    def view(self, box: Box) -> ModelImage:
        """What a model sees of the region ``box``: this image itself for the whole picture, else a ``Crop``."""
        return self if box == self.whole else Crop(self, box)

    def region(self, box: Box) -> np.ndarray:
        """uint8 RGB pixels of the region ``box``, fitted to ``max_side``: cut from the full picture when it is
        decoded, else decoded at the JPEG draft scale that still gives the region its ``max_side``."""
        started = time.perf_counter()
        if self._picture is not None:
            region = self._picture.crop(box)
        else:
            width, height = box[2] - box[0], box[3] - box[1]
            needed = max(width, height) * max(self.stored_size) // max(self.size)
            draft = draft_size(self.stored_size, self.limits.max_side, needed) if self.format == "JPEG" else None
            with self._reserve(draft or self.stored_size):
                upright = _upright_rgb(self.data, draft)
                scale_x, scale_y = upright.width / self.size[0], upright.height / self.size[1]
                x0, y0, x1, y1 = box
                region = upright.crop(
                    (round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y))
                )
        pixels = _fit(region, self.limits.max_side)
        self.decode_s += time.perf_counter() - started
        return pixels

    def png(self, pixels: np.ndarray) -> bytes:
        """``pixels`` as a lossless PNG TensorFlow's decoder reads (counted in this image's decode time)."""
        started = time.perf_counter()
        buffer = io.BytesIO()
        # Lossless, and level 1: several times faster to write than the default, for slightly more bytes.
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        self.decode_s += time.perf_counter() - started
        return buffer.getvalue()

    @property
    def has_picture(self) -> bool:
        """True once the full-size picture has been decoded."""
        return self._picture is not None

    @property
    def forwards_as_sent(self) -> bool:
        """True when the bytes as sent are what TensorFlow's decoder should read (no re-encoding needed)."""
        return (
            self.mode in _TF_READS.get(self.format, ())
            and not self._transparent
            and self.orientation == 1
            and fit_within(self.stored_size, self.limits.max_side) == self.stored_size
        )

    def _reserve(self, decoded: tuple[int, int]) -> AbstractContextManager[None]:
        budget = self.limits.budget
        if budget is None:
            return _nothing()
        target = fit_within(decoded, self.limits.max_side)
        peak = self.decoding_bytes(decoded) + target[0] * target[1] * FITTED_BYTES_PER_PIXEL
        return budget.reserve(peak, f"a {self.stored_size[0]}x{self.stored_size[1]} image")

    def decoding_bytes(self, decoded: tuple[int, int]) -> int:
        """The most decoding this image to ``decoded`` pixels holds at once: the pixels and their RGB conversion, a
        banded conversion's band, a progressive JPEG's coefficients (libjpeg keeps every one of the stored picture,
        whatever the draft scale: 2 bytes each, one per component and pixel at most), and the decoder's and the
        allocator's slack. Measured against the memory's high-water mark in every mode (tests/unit/test_images.py).
        """
        pixels = decoded[0] * decoded[1]
        total = pixels * DECODE_BYTES_PER_PIXEL + DECODE_SLACK_BYTES
        if converts_in_bands(self.mode, transparent=self._transparent):
            total += min(pixels, BAND_PIXELS) * BAND_BYTES_PER_PIXEL
        if self._progressive:
            total += self.stored_size[0] * self.stored_size[1] * 2 * Image.getmodebands(self.mode)
        return total


class Crop:
    """A region of a request image as a model sees it (a region of interest, or a tile)."""

    def __init__(self, image: ImageInput, box: Box) -> None:
        self.image = image
        self.box = box

    def pixels(self) -> np.ndarray:
        """The region's uint8 RGB pixels, fitted to ``max_side``. Not kept: a backend asks once, and a frame's many
        tiles then hold memory only while their calls are in flight."""
        return self.image.region(self.box)

    def encoded(self) -> tuple[bytes, str]:
        """A lossless PNG of the region's pixels (TensorFlow cannot cut a region out of the bytes as sent)."""
        return self.image.png(self.pixels()), "png"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _decoding() -> Iterator[None]:
    """Pillow's failures reading the client's bytes as ``InvalidImage``, its bomb check as ``PayloadTooLarge``.

    Only around the calls into Pillow that read those bytes (opening, the header's EXIF, decoding, turning it
    upright): the project's own conversion after that is not the client's fault, and a bug there is a 500 with its
    traceback in the log, never a 400 "cannot decode image".
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns on images past its own bomb limit (ours, MAX_IMAGE_PIXELS, is checked explicitly) and on
            # corrupt metadata it skips; neither is the client's answer nor the log's business.
            warnings.simplefilter("ignore")
            yield
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image too large to decode: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot decode image: {_reason(exc)}") from None


def _orientation(header: Image.Image) -> object:
    """The EXIF orientation read from the header alone, as stored (``upright_turn`` says what it does). A PNG's EXIF
    may follow its pixels, and Pillow decodes the whole picture to find it, so a PNG counts only EXIF already read
    with the header (upright otherwise). A TIFF is Pillow's to turn: it reports the upright size and turns the
    pixels as it loads them."""
    if header.format == "TIFF" or (header.format == "PNG" and "exif" not in header.info):
        return 1
    return header.getexif().get(ExifTags.Base.Orientation, 1)


# The EXIF orientations that turn or flip a picture, looked up as ``ImageOps.exif_transpose`` looks them up.
_TURNS: dict[object, int] = {value: value for value in range(2, 9)}


def upright_turn(orientation: object) -> int:
    """The orientation (2-8) Pillow turns a picture by for a stored EXIF value, or 1: by equality, as
    ``ImageOps.exif_transpose`` reads it, so a FLOAT 6.0 turns and a 9, an ASCII "6", an infinity or a pair of
    values does not (the client's odd tag is ignored, as Pillow ignores it, never a failed request)."""
    try:
        return _TURNS.get(orientation, 1)
    except TypeError:  # unhashable
        return 1


def _check_shape(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise InvalidImage(f"cannot decode image: it declares a size of {width}x{height}")
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} (MAX_IMAGE_PIXELS)"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise PayloadTooLarge(
            f"image is {width}x{height}: one side is {aspect:.0f} times the other; the limit is "
            f"{limits.max_aspect:g} (MAX_IMAGE_ASPECT)"
        )


def _upright_rgb(data: bytes, draft: tuple[int, int] | None) -> Image.Image:
    """The picture in ``data`` decoded (at the JPEG ``draft`` size, when given), upright, as RGB."""
    with _decoding():
        image = Image.open(io.BytesIO(data))
        if draft is not None:
            image.draft(image.mode, draft)  # decode at 1/2, 1/4 or 1/8 scale
        image.load()  # decodes the first frame only; animated images answer for their first frame
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when there is nothing to turn
    return to_rgb(image)


def _fit(image: Image.Image, max_side: int) -> np.ndarray:
    target = fit_within(image.size, max_side)
    fitted = image.resize(target, Image.Resampling.BILINEAR) if target != image.size else image
    return np.asarray(fitted, dtype=np.uint8)


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down, aspect kept, so its longer side is at most ``max_side`` (0: no limit)."""
    width, height = size
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_size(size: tuple[int, int], max_side: int, needed: int | None = None) -> tuple[int, int] | None:
    """The size to ask Pillow's JPEG draft mode for: the smallest 1/2, 1/4 or 1/8 reduction whose longer side (or,
    for a region, the region's ``needed`` longer side) is still at least ``DRAFT_SLACK * max_side``; None when no
    reduction qualifies (or there is no limit)."""
    longest = max(size) if needed is None else needed
    if max_side <= 0 or longest <= max_side:
        return None
    chosen = None
    for denominator in (2, 4, 8):
        if longest / denominator >= DRAFT_SLACK * max_side:
            chosen = denominator
    if chosen is None:
        return None
    return -(-size[0] // chosen), -(-size[1] // chosen)  # ceiling division, as the JPEG decoder rounds


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: wide grayscale scaled to 8 bits, alpha composited onto white.

    The conversions that make whole-picture temporaries (alpha: the RGBA form, a white background, the composite;
    wide grayscale: numpy's copies) run a band of ``BAND_PIXELS`` at a time into the RGB result, so a picture holds
    its decoded pixels, its RGB result and one band's work at once (``DECODE_BYTES_PER_PIXEL``), not four or five
    copies of itself: each pixel's value is the same either way.
    """
    mode = image.mode
    if converts_in_bands(mode, transparent="transparency" in image.info):
        if mode in _ALPHA_MODES or mode == "P":
            return _banded(image, _on_white)
        # Wide grayscale: scale to 8 bits instead of clipping, so a 16-bit image keeps its contrast.
        # (Pillow's getextrema refuses some of these modes, I;16B from a big-endian TIFF among them.)
        scaled = mode != "F" and any(np.asarray(image.crop(box)).max(initial=0) > 255 for box in _bands(image))
        return _banded(image, lambda band: _gray_to_rgb(band, scaled=scaled))
    if mode != "RGB":
        return image.convert("RGB")
    return image


_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def converts_in_bands(mode: str, *, transparent: bool) -> bool:
    """True for the modes ``to_rgb`` converts a band at a time: alpha, a palette with a transparent index, wide
    grayscale."""
    return mode in _ALPHA_MODES or (mode == "P" and transparent) or mode.startswith("I;16") or mode in ("I", "F")


def _bands(image: Image.Image) -> Iterator[Box]:
    """The boxes of ``image``'s bands of rows, of about ``BAND_PIXELS`` each."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        yield (0, top, width, min(height, top + rows))


def _banded(image: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """The RGB picture ``convert`` makes of each band of rows of ``image``, pasted into one."""
    result = Image.new("RGB", image.size)
    for box in _bands(image):
        result.paste(convert(image.crop(box)), box)
    return result


def _gray_to_rgb(band: Image.Image, *, scaled: bool) -> Image.Image:
    """A band of wide grayscale as RGB: floats clipped to 0-255; integers shifted from 16 bits when the picture
    holds values over 255 (``scaled``), else taken as they are."""
    values = np.asarray(band)
    if band.mode == "F":
        gray = np.clip(values, 0, 255).astype(np.uint8)
    elif scaled:
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    else:
        gray = values.astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _on_white(band: Image.Image) -> Image.Image:
    """A band with alpha (or a palette with a transparent index) composited onto the white background, as RGB."""
    rgba = band.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).strip()
    # Pillow's messages sometimes carry the in-memory stream's repr; it means nothing to a client.
    if "<_io.BytesIO" in text:
        text = text.split(" <_io.BytesIO")[0].rstrip(":")
    return text or type(exc).__name__

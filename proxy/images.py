"""Image bytes → the RGB uint8 array the model takes. Pure functions, no I/O beyond the bytes given."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from proxy.errors import InvalidImage, PayloadTooLarge

# Alpha is composited onto white: transparent regions of a logo or a screenshot are "nothing", and white reads
# as nothing to a detector trained on photographs more often than black does.
_BACKGROUND = (255, 255, 255)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded request image: what the model gets, and the picture as the client sent it."""

    pixels: np.ndarray  # (h, w, 3) uint8 RGB, scaled to fit MAX_IMAGE_SIDE
    size: tuple[int, int]  # (width, height) of the EXIF-oriented original
    original: Image.Image | None = None  # the full-size oriented RGB picture, when asked for (to draw on)


def decode_image(data: bytes, *, max_pixels: int, max_side: int = 0) -> np.ndarray:
    """The model's ``(height, width, 3)`` uint8 RGB array for image bytes; see ``decode``."""
    return decode(data, max_pixels=max_pixels, max_side=max_side).pixels


def decode(data: bytes, *, max_pixels: int, max_side: int = 0, keep_original: bool = False) -> DecodedImage:
    """Decode image bytes into the model's ``(height, width, 3)`` uint8 RGB array, EXIF orientation applied.

    With ``max_side`` > 0, images whose longer side exceeds it are scaled down to fit: JPEGs are decoded at a
    reduced DCT scale to begin with (Pillow's draft mode), which skips most of the decoding work. Detectors resize
    their input to a few hundred pixels anyway and boxes are normalized, so answers stay put.

    Raises ``InvalidImage`` for bytes that are not a decodable image and ``PayloadTooLarge`` for images whose
    header declares more than ``max_pixels`` pixels (checked before any pixel is decoded).
    """
    if not data:
        raise InvalidImage("empty body: send the image bytes as the request body")
    try:
        with warnings.catch_warnings():
            # Pillow warns on images past its own bomb limit; ours is checked explicitly just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} (MAX_IMAGE_PIXELS)"
                )
            draft = draft_size((width, height), max_side)
            if draft is not None and not keep_original:
                image.draft(image.mode, draft)  # JPEG only (a no-op otherwise): decode at 1/2, 1/4 or 1/8 scale
            image.load()  # decodes the first frame only; animated images answer for their first frame
            # The size the client sees once EXIF orientation is applied (orientations 5-8 swap the axes).
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            oriented = (height, width) if turned else (width, height)
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when there is nothing to turn
            rgb = to_rgb(image)
            target = fit_within(rgb.size, max_side)
            model_input = rgb.resize(target, Image.Resampling.BILINEAR) if target != rgb.size else rgb
            return DecodedImage(
                pixels=np.asarray(model_input, dtype=np.uint8),
                size=oriented,
                original=rgb if keep_original else None,
            )
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image too large to decode: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot decode image: {_reason(exc)}") from None


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down, aspect kept, so its longer side is at most ``max_side`` (0: no limit)."""
    width, height = size
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


# A JPEG may decode this much below MAX_IMAGE_SIDE when that lets it use a cheaper DCT scale: a 4000x3000 photo
# decodes at 1/4 (1000x750, a few ms) instead of at 1/2 (2000x1500) followed by a resize to 1024x768.
DRAFT_SLACK = 0.9


def draft_size(size: tuple[int, int], max_side: int) -> tuple[int, int] | None:
    """The size to ask Pillow's JPEG draft mode for: the smallest 1/2, 1/4 or 1/8 reduction whose longer side is
    still at least ``DRAFT_SLACK * max_side``; None when no reduction qualifies (or there is no limit)."""
    longest = max(size)
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
    """Convert any Pillow mode to RGB: wide grayscale scaled to 8 bits, alpha composited onto white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Wide grayscale: scale to 8 bits instead of clipping, so a 16-bit image keeps its contrast.
        values = np.asarray(image)
        if mode == "F":
            gray = np.clip(values, 0, 255).astype(np.uint8)
        else:
            wide = values.astype(np.int64)
            gray = (
                (np.clip(wide, 0, 65535) >> 8).astype(np.uint8) if wide.max(initial=0) > 255 else wide.astype(np.uint8)
            )
        return Image.fromarray(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).strip()
    # Pillow's messages sometimes carry the in-memory stream's repr; it means nothing to a client.
    if "<_io.BytesIO" in text:
        text = text.split(" <_io.BytesIO")[0].rstrip(":")
    return text or type(exc).__name__

"""Image bytes → the RGB uint8 array the model takes. Pure functions, no I/O beyond the bytes given."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from proxy.errors import InvalidImage, PayloadTooLarge

# Alpha is composited onto white: transparent regions of a logo or a screenshot are "nothing", and white reads
# as nothing to a detector trained on photographs more often than black does.
_BACKGROUND = (255, 255, 255)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes into an ``(height, width, 3)`` uint8 RGB array, EXIF orientation applied.

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
            image.load()  # decodes the first frame only; animated images answer for their first frame
            image = ImageOps.exif_transpose(image) or image
            return to_rgb_array(image)
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image too large to decode: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot decode image: {_reason(exc)}") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to a contiguous ``(h, w, 3)`` uint8 RGB array."""
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
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).strip()
    # Pillow's messages sometimes carry the in-memory stream's repr; it means nothing to a client.
    if "<_io.BytesIO" in text:
        text = text.split(" <_io.BytesIO")[0].rstrip(":")
    return text or type(exc).__name__

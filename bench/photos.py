"""The pictures the benchmark sends, all made from the README's photograph ``docs/person.jpg`` (512x512, one person).

- 640x480: its top 512x384 (4:3, the head and shoulders kept) scaled up to 640x480 (Lanczos), JPEG quality 90.
- 320x320: the whole photograph scaled down to 320x320 (Lanczos), saved as Frigate saves its frames
  (``Image.fromarray(frame).save(output, format="JPEG")``: Pillow's default quality, 75).
- 4000x3000: the 640x480 picture scaled up (bicubic), JPEG quality 90: a phone camera's size, for the large-image
  ratio (the proxy decodes it at a reduced DCT scale, MAX_IMAGE_SIDE).
- 4000x3000-small-objects: the committed cat and cameraman photographs (``tests/fixtures/photos``) pasted a few
  hundred pixels wide into a 4000x3000 frame (``harness.frames``), as the camera tests make it: for ``tile=640``.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from harness.frames import small_objects_frame
from harness.processes import REPO

SOURCE = REPO / "docs" / "person.jpg"
QUALITY = 90
SMALL, FRAME, LARGE = "640x480", "320x320", "4000x3000"
CAMERA = "4000x3000-small-objects"  # the cat and the cameraman pasted small into a 4000x3000 frame (harness.frames)
PHOTOS = REPO / "tests" / "fixtures" / "photos"  # the committed photographs the camera tests paste (files, not code)


def _jpeg(picture: Image.Image, quality: int | None = QUALITY) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", **({"quality": quality} if quality is not None else {}))
    return buffer.getvalue()


def make(out: Path | None = None) -> dict[str, bytes]:
    """The JPEGs by name; written into ``out`` as ``image-<name>.jpg`` when given."""
    with Image.open(SOURCE) as opened:
        source = opened.convert("RGB")
    width = source.width
    small = source.crop((0, 0, width, width * 3 // 4)).resize((640, 480), Image.Resampling.LANCZOS)
    pictures = {
        SMALL: small,
        FRAME: source.resize((320, 320), Image.Resampling.LANCZOS),
        LARGE: small.resize((4000, 3000), Image.Resampling.BICUBIC),
    }
    photos = {name: _jpeg(picture, None if name == FRAME else QUALITY) for name, picture in pictures.items()}
    photos[CAMERA] = small_objects_frame((PHOTOS / "cat.jpg").read_bytes(), (PHOTOS / "cameraman.jpg").read_bytes())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in photos.items():
            (out / f"image-{name}.jpg").write_bytes(data)
    return photos


def distinct_frames(photo: bytes, count: int) -> list[bytes]:
    """``count`` JPEGs of ``photo``, each with one pixel of its own changed: frames a camera sends one after the
    other, which no cache can answer for one another."""
    with Image.open(io.BytesIO(photo)) as opened:
        picture = opened.convert("RGB")
    frames = []
    for index in range(count):
        changed = picture.copy()
        changed.putpixel((index % changed.width, 0), (index % 256, 255 - index % 256, 0))
        frames.append(_jpeg(changed))
    return frames

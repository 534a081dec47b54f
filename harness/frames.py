"""Camera-sized frames made of the committed photographs: small real objects in a big picture, for tiles."""

from __future__ import annotations

import io

from PIL import Image, ImageFilter

FRAME = (4000, 3000)
# Where the photographs go, each a few hundred pixels wide. The cat straddles the edge between the first and second
# 640-pixel tiles of its row (x 1152 ends the second tile's predecessor), so the merge of the tiles' halves matters.
CAT_BOX = (1000, 700, 1330, 920)
PERSON_BOX = (2500, 1800, 2800, 2100)


def small_objects_frame(cat: bytes, person: bytes) -> bytes:
    """A 4000x3000 JPEG: a soft grey background with the cat photograph and the cameraman pasted small."""
    background = Image.new("RGB", (40, 30), (120, 124, 118))
    background.putpixel((5, 5), (150, 150, 140))
    background.putpixel((33, 22), (95, 100, 105))
    frame = background.resize(FRAME, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(30))
    for photo, box in ((cat, CAT_BOX), (person, PERSON_BOX)):
        picture = Image.open(io.BytesIO(photo)).convert("RGB")
        frame.paste(picture.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS), box[:2])
    buffer = io.BytesIO()
    frame.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()

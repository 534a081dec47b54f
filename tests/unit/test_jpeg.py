"""``proxy.jpeg``: a JPEG's header read without Pillow, held to Pillow on photographs, on what Pillow writes, and on
mutated headers. Whenever it answers, Pillow reads the same mode, size and orientation; otherwise it says None."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from proxy.jpeg import jpeg_header
from tests.conftest import PHOTOS

ORIENTATION = 0x0112
PHOTOGRAPHS = {name: path.read_bytes() for name, path in PHOTOS.items()}
_GRACE = Path(Image.__file__).parents[1] / "matplotlib" / "mpl-data" / "sample_data" / "grace_hopper.jpg"
if _GRACE.exists():  # a camera photograph with EXIF, in matplotlib's wheel
    PHOTOGRAPHS["grace_hopper"] = _GRACE.read_bytes()


def pillow(data: bytes) -> tuple[str, tuple[int, int], int, bool] | str:
    """What Pillow reads as ``proxy.images.ImageInput`` takes it: a JPEG's mode, size, EXIF orientation and whether
    it is progressive; else the format it found or why it refused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = Image.open(io.BytesIO(data))
            orientation = int(header.getexif().get(ORIENTATION, 1) or 1)
        except Exception as exc:  # any refusal is an answer the fast path must not contradict
            return f"refused: {type(exc).__name__}"
    if header.format != "JPEG" or "transparency" in header.info:
        return f"{header.format} {header.info.get('transparency')}"
    return header.mode, header.size, orientation, "progressive" in header.info


def agrees(data: bytes) -> bool:
    """The property: the fast path answers only what Pillow reads."""
    scanned = jpeg_header(data, Image.MAX_IMAGE_PIXELS)
    return scanned is None or scanned == pillow(data)


def jpeg(picture: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", **options)
    return out.getvalue()


def exif_with(orientation: int, *, kind: int = 3, count: int = 1) -> bytes:
    """An EXIF segment's payload (``Exif\\0\\0`` and a little-endian TIFF) whose one entry is the orientation."""
    entry = struct.pack("<HHL", ORIENTATION, kind, count) + struct.pack("<HH", orientation, 0)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<L", 8) + struct.pack("<H", 1) + entry + struct.pack("<L", 0)


SCENE = Image.radial_gradient("L").resize((96, 64)).convert("RGB")


@pytest.mark.parametrize("name", sorted(PHOTOGRAPHS))
def test_photographs_are_read_as_pillow_reads_them(name: str) -> None:
    """The committed photographs (and a camera's, with its EXIF) are read by the fast path, as Pillow reads them."""
    data = PHOTOGRAPHS[name]
    scanned = jpeg_header(data, Image.MAX_IMAGE_PIXELS)
    assert scanned is not None
    assert scanned == pillow(data)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"quality": 30},
        {"progressive": True},
        {"optimize": True},
        {"subsampling": 0},
        {"subsampling": 2, "quality": 95},
        {"restart_marker_blocks": 4},
        {"comment": b"a camera"},
        {"icc_profile": b"\0" * 3000},
        {"icc_profile": b"\1" * 70000},  # several ICC segments
        {"dpi": (300, 300)},
        {"xmp": b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'},
    ],
    ids=str,
)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_what_pillow_writes_is_read_as_pillow_reads_it(mode: str, options: dict[str, object]) -> None:
    """Every JPEG variant Pillow writes in the modes the fast path answers: read, and the same as Pillow's. XMP
    naming an orientation without EXIF is Pillow's to read (it honours it)."""
    data = jpeg(SCENE.convert(mode), **options)
    scanned = jpeg_header(data, Image.MAX_IMAGE_PIXELS)
    if "xmp" in options:
        assert scanned is None
        assert pillow(data)[2] == 6
    else:
        assert scanned == pillow(data) == (mode, SCENE.size, 1, "progressive" in options)


@pytest.mark.parametrize("orientation", range(10))
def test_exif_orientations_are_pillows(orientation: int) -> None:
    """Each EXIF orientation, 0 (read as 1) and 9 (not one of the eight) included, is the one Pillow reads."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "Camera maker"  # another entry, its text stored out of line
    data = jpeg(SCENE, exif=exif)
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) == pillow(data) == ("RGB", SCENE.size, orientation or 1, False)


@pytest.mark.parametrize(
    ("picture", "options"),
    [
        (SCENE.convert("CMYK"), {}),  # four components: Pillow's
        (SCENE, {"exif": exif_with(6, kind=4)}),  # the orientation as a LONG
        (SCENE, {"exif": exif_with(6, count=2)}),  # two values
        (SCENE, {"exif": b"Exif\0\0MM\0+" + b"\0" * 12}),  # a BigTIFF header
        (SCENE, {"exif": b"Exif\0\0" + b"Exif\0\0" + exif_with(3)[6:]}),  # the prefix twice
        (SCENE, {"exif": b"Exif\0\0not a tiff"}),
        (SCENE, {"exif": b"Exif\0\0"}),  # nothing after the prefix
        (SCENE, {"xmp": b"<x:xmpmeta/>"}),  # XMP, no EXIF: Pillow looks there
    ],
    ids=["cmyk", "long", "two-values", "bigtiff", "prefix-twice", "not-tiff", "empty-exif", "xmp"],
)
def test_what_it_is_not_sure_of_is_left_to_pillow(picture: Image.Image, options: dict[str, object]) -> None:
    """Headers Pillow reads its own way are not answered: the caller asks Pillow."""
    data = jpeg(picture, **options)
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None
    assert agrees(data)


def test_an_mpo_is_left_to_pillow() -> None:
    """A multi-picture file (as cameras write stereo pairs) is Pillow's: it opens it as MPO."""
    out = io.BytesIO()
    SCENE.save(out, "MPO", save_all=True, append_images=[SCENE.rotate(180)])
    data = out.getvalue()
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None
    assert pillow(data) == "MPO None"


def test_past_pillows_pixel_limit_it_is_pillows() -> None:
    """Past Pillow's own pixel limit (it warns, then refuses) the header is Pillow's to read."""
    data = jpeg(SCENE)
    assert jpeg_header(data, SCENE.width * SCENE.height - 1) is None
    assert jpeg_header(data, SCENE.width * SCENE.height) == ("RGB", SCENE.size, 1, False)


def test_not_a_jpeg_is_none() -> None:
    """Other formats and other bytes are not answered."""
    png = io.BytesIO()
    SCENE.save(png, "PNG")
    for data in (png.getvalue(), b"", b"\xff\xd8", b"\xff\xd8\xff", b"GIF89a"):
        assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None


def _header_end(data: bytes) -> int:
    """Where the first scan's data begins."""
    return data.index(b"\xff\xda") + 2 + struct.unpack_from(">H", data, data.index(b"\xff\xda") + 2)[0]


_exif = Image.Exif()
_exif[ORIENTATION] = 8
_exif[0x010F] = "Camera maker"
BASE = jpeg(SCENE, exif=_exif, icc_profile=b"\0" * 200, comment=b"c", dpi=(72, 72), restart_marker_blocks=2)
HEADER = _header_end(BASE)


def test_every_truncation_of_the_header_agrees() -> None:
    """Cut anywhere in the header, the bytes are never answered otherwise than Pillow reads them."""
    assert jpeg_header(BASE, Image.MAX_IMAGE_PIXELS) == ("RGB", SCENE.size, 8, False)
    for cut in range(HEADER + 1):
        assert agrees(BASE[:cut]), cut


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, HEADER - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_headers_agree(changes: list[tuple[int, int]]) -> None:
    """Bytes of the header overwritten (lengths, markers, the EXIF directory, tables): the fast path answers only
    what Pillow reads."""
    data = bytearray(BASE)
    for at, value in changes:
        data[at] = value
    assert agrees(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, HEADER), st.binary(min_size=1, max_size=24))
def test_bytes_inserted_into_the_header_agree(at: int, inserted: bytes) -> None:
    """Bytes inserted into the header (junk, fill bytes, stray markers): never answered otherwise than Pillow."""
    assert agrees(BASE[:at] + inserted + BASE[at:])


def segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The segments before the first scan, ``(marker, body)``, and the rest (the scan onwards)."""
    found, position = [], 2
    while data[position + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, position + 2)
        found.append((data[position + 1], data[position + 4 : position + 2 + length]))
        position += 2 + length
    return found, data[position:]


def joined(found: list[tuple[int, bytes]], rest: bytes) -> bytes:
    return (
        b"\xff\xd8"
        + b"".join(bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body for marker, body in found)
        + rest
    )


def rewritten(marker: int, change: object) -> bytes:
    """BASE with the body of its first ``marker`` segment passed through ``change`` (lengths kept right)."""
    found, rest = segments(BASE)
    at = next(index for index, (kind, _) in enumerate(found) if kind == marker)
    found[at] = (marker, change(found[at][1]))  # type: ignore[operator]
    return joined(found, rest)


def directory(*entries: tuple[int, int, int, int]) -> bytes:
    """An EXIF payload whose first directory holds ``entries`` ``(tag, type, count, value)`` inline."""
    packed = b"".join(struct.pack("<HHLHH", tag, kind, count, value, 0) for tag, kind, count, value in entries)
    return b"Exif\0\0II*\0" + struct.pack("<LH", 8, len(entries)) + packed + struct.pack("<L", 0)


@pytest.mark.parametrize(
    ("marker", "change", "pillow_refuses"),
    [
        (0xC0, lambda body: body + b"\0", True),  # a frame's component list one byte long
        (0xC0, lambda body: body[:5], True),  # no component count
        (0xDB, lambda body: body[:-1], True),  # a quantization table one byte short
        (0xE0, lambda body: b"JFIF\0\1", True),  # a JFIF segment too short for its version
        (0xE2, lambda body: b"ICC_PROFILE\0", True),  # an ICC segment without its sequence numbers
        (0xE1, lambda body: directory((ORIENTATION, 3, 1, 6), (ORIENTATION, 3, 1, 3)), False),  # named twice
        (0xE1, lambda body: directory((0x010F, 2, 40, 9000), (ORIENTATION, 3, 1, 6)), False),  # out of the segment
        (0xE1, lambda body: directory((0x010F, 99, 1, 0), (ORIENTATION, 3, 1, 6)), False),  # an unknown type
    ],
    ids=["frame-long", "frame-short", "table-short", "jfif-short", "icc-short", "two-orientations", "outside",
         "unknown-type"],
)  # fmt: skip
def test_segments_pillow_reads_otherwise_are_left_to_it(marker: int, change: object, pillow_refuses: bool) -> None:
    """Segments Pillow refuses or reads its own way, each made by hand, are left to Pillow."""
    data = rewritten(marker, change)
    assert isinstance(pillow(data), str) is pillow_refuses
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None


def test_a_second_frame_header_or_none_is_left_to_pillow() -> None:
    """Two frame headers (Pillow keeps the last), or a scan with none before it (Pillow refuses): not answered."""
    found, rest = segments(BASE)
    frame = next(segment for segment in found if segment[0] == 0xC0)
    twice = joined([*found, (0xC0, frame[1][:1] + struct.pack(">H", 32) + frame[1][3:])], rest)
    assert pillow(twice) == ("RGB", (SCENE.width, 32), 8, False)
    assert jpeg_header(twice, Image.MAX_IMAGE_PIXELS) is None
    none = joined([segment for segment in found if segment[0] != 0xC0], rest)
    assert isinstance(pillow(none), str)
    assert jpeg_header(none, Image.MAX_IMAGE_PIXELS) is None


def test_a_directory_without_orientation_is_upright() -> None:
    """An EXIF directory naming no orientation is read as upright, as Pillow reads it."""
    data = rewritten(0xE1, lambda body: directory((0x010F, 2, 4, 0)))
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) == pillow(data) == ("RGB", SCENE.size, 1, False)


def test_two_exif_segments_are_left_to_pillow() -> None:
    """Pillow joins EXIF segments and reads the first's directory; the fast path does not follow."""
    found, rest = segments(BASE)
    at = next(index for index, (kind, _) in enumerate(found) if kind == 0xE1)
    found.insert(at + 1, (0xE1, directory((ORIENTATION, 3, 1, 3))))
    data = joined(found, rest)
    assert pillow(data) == ("RGB", SCENE.size, 8, False)
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None


def test_junk_between_segments_is_left_to_pillow() -> None:
    """Bytes between segments, which Pillow skips one by one, are not followed."""
    found, rest = segments(BASE)
    data = joined(found[:1], b"") + b"\0\0" + joined(found[1:], rest)[2:]
    assert pillow(data) == ("RGB", SCENE.size, 8, False)
    assert jpeg_header(data, Image.MAX_IMAGE_PIXELS) is None

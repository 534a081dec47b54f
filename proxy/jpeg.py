"""A JPEG's header read without Pillow: its mode, size and EXIF orientation, or None when the bytes are not plainly
one that Pillow would read the same way.

Every request's image header is read before anything else (``proxy.images.ImageInput``). Pillow's JPEG plugin
does that in Python, marker by marker, and also parses what the service never uses (quantization tables, DPI, the
whole EXIF directory): about 45 us a request on a warm core, several times that after the wait for the model. This
walks the markers alone and reads one EXIF entry. It is a fast path, not a second decoder: whatever it is not sure
Pillow reads identically (several frames, MPO, XMP without an EXIF orientation, CMYK, truncated or odd segments,
junk between markers, anything past Pillow's own pixel limit) returns None, and the caller asks Pillow as before.
The tests hold it to Pillow on real photographs, on every variant Pillow writes, and on mutated headers.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

SOI = b"\xff\xd8\xff"

_SOS = 0xDA
_DQT = 0xDB
_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended and progressive Huffman: what libjpeg decodes
_PROGRESSIVE = 0xC2
# Markers Pillow reads with a length and skips or reads as APPn/COM: what may come before the first scan.
_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_MODES = {1: "L", 3: "RGB"}
# Segments Pillow reads fields of: (marker, prefix, the length it needs, or None when it is left to Pillow).
_CHECKED = (
    (0xE0, b"JFIF", 7),
    (0xEE, b"Adobe", 7),
    (0xE2, b"ICC_PROFILE\0", 14),
    (0xE2, b"MPF\0", None),  # an MPO: several pictures
    (0xED, b"Photoshop 3.0\0", None),
)
_ORIENTATION = 0x0112
_SHORT = 3
# TIFF field types and their sizes (Pillow's TiffTags.TYPES, BigTIFF's included).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


class _Unsure(Exception):
    """The header is not plainly one Pillow reads the same way: ask Pillow."""


class JpegHeader(NamedTuple):
    """What the service reads of a JPEG's header, as Pillow reads it."""

    mode: str
    size: tuple[int, int]
    orientation: int  # as stored (a stored 0 read as 1)
    progressive: bool  # Pillow's ``"progressive" in info``: libjpeg then holds every coefficient while decoding


def jpeg_header(data: bytes, max_pixels: int | None) -> JpegHeader | None:
    """The mode, size, EXIF orientation and progressiveness of the JPEG in ``data`` as Pillow reads them
    (``Image.open``, its ``getexif()`` orientation and ``info``), or None when Pillow should be asked.
    ``max_pixels``: Pillow's ``Image.MAX_IMAGE_PIXELS`` (past it Pillow warns or refuses, so it is asked)."""
    if not data.startswith(SOI):
        return None
    try:
        frame, exif, xmp = _read_segments(data)
    except _Unsure:
        return None
    mode, (width, height), progressive = frame
    if max_pixels is not None and width * height > max_pixels:
        return None
    orientation = _exif_orientation(exif) if exif is not None else 0
    if orientation is None or (orientation == 0 and xmp):
        return None  # the EXIF is not plain, or Pillow would look for the orientation in the XMP
    return JpegHeader(mode, (width, height), orientation or 1, progressive)


def _read_segments(data: bytes) -> tuple[tuple[str, tuple[int, int], bool], bytes | None, bool]:
    """The frame's mode and size, the EXIF segment and whether there is XMP, from the segments before the first
    scan; ``_Unsure`` for anything else: truncation, junk or fill bytes between markers, other markers."""
    frame: tuple[str, tuple[int, int], bool] | None = None
    exif: bytes | None = None
    xmp = False
    position, end = 2, len(data)
    while True:
        if position + 4 > end or data[position] != 0xFF:
            raise _Unsure
        marker = data[position + 1]
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2 or position + 2 + length > end:
            raise _Unsure
        body = data[position + 4 : position + 2 + length]
        position += 2 + length
        if marker == _SOS:
            if frame is None:
                raise _Unsure
            return frame, exif, xmp
        if marker in _SOF and frame is None:
            frame = (*_frame(body), marker == _PROGRESSIVE)
        elif marker not in _SEGMENTS or not _segment_is_plain(marker, body):
            raise _Unsure  # a second frame, a marker Pillow reads otherwise, a segment it would refuse
        elif marker == 0xE1 and body.startswith(b"Exif\0\0"):
            if exif is not None:
                raise _Unsure  # Pillow joins several; not worth following
            exif = body
        elif marker == 0xE1 and body.startswith(b"http://ns.adobe.com/xap/1.0/\0"):
            xmp = True


def _frame(body: bytes) -> tuple[str, tuple[int, int]]:
    """A start-of-frame segment's mode and size, when Pillow reads it without complaint."""
    if len(body) < 6 or body[0] != 8 or (len(body) - 6) % 3:
        raise _Unsure
    height, width = struct.unpack_from(">HH", body, 1)
    mode = _MODES.get(body[5])
    if mode is None or width == 0 or height == 0:
        raise _Unsure
    return mode, (width, height)


def _segment_is_plain(marker: int, body: bytes) -> bool:
    """False for what Pillow would refuse or read otherwise: bad quantization tables, short JFIF, Adobe or ICC
    segments, MPO pictures, Photoshop resource blocks."""
    if marker == _DQT:
        while body:
            table = 1 + (64 if body[0] // 16 == 0 else 128)
            if len(body) < table:
                return False
            body = body[table:]
        return True
    for kind, prefix, least in _CHECKED:
        if marker == kind and body.startswith(prefix):
            return least is not None and len(body) >= least
    return True


def _directory(exif: bytes) -> tuple[bytes, str, list[tuple[int, int, int, int]]] | None:
    """The TIFF structure inside an EXIF segment: its bytes, byte order and the first directory's entries
    ``(tag, type, count, offset of their 4 bytes)``, when it is plain: a standard header, a whole directory, known
    types, each entry's values within the segment (Pillow stops reading a directory at the first that is not)."""
    tiff = exif[6:]
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(tiff[:4])
    if order is None or len(tiff) < 8:  # (a second Exif prefix, which Pillow strips, is no TIFF header)
        return None
    (directory,) = struct.unpack_from(order + "L", tiff, 4)
    if directory + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, directory)
    if directory + 2 + 12 * count + 4 > len(tiff):
        return None
    entries = []
    for index in range(count):
        at = directory + 2 + 12 * index
        tag, kind, values, offset = struct.unpack_from(order + "HHLL", tiff, at)
        size = _TYPE_SIZES.get(kind)
        if size is None or (size * values > 4 and offset + size * values > len(tiff)):
            return None
        entries.append((tag, kind, values, at + 8))
    return tiff, order, entries


def _exif_orientation(exif: bytes) -> int | None:
    """The orientation a plain EXIF segment gives: its value (a stored 0 read as 1, as the service reads it), 0 when
    it names none (Pillow then looks in the XMP), None when it is not plain or names one oddly (twice, not one
    SHORT)."""
    found = _directory(exif)
    if found is None:
        return None
    tiff, order, entries = found
    orientations = [entry for entry in entries if entry[0] == _ORIENTATION]
    if not orientations:
        return 0
    if len(orientations) > 1:
        return None
    _, kind, values, at = orientations[0]
    if kind != _SHORT or values != 1:
        return None
    (value,) = struct.unpack_from(order + "H", tiff, at)
    return value or 1

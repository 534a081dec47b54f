"""Official TF1 detection model zoo models by name: ``python -m converter fetch NAME DIR``.

The tarball is downloaded from the zoo's address (or a mirror: ``MODEL_ZOO_URL``, ``--base-url``), checked against
the SHA-256 pinned here (as OpenVINO's open_model_zoo records them), and only its ``<top>/frozen_inference_graph.pb``
is taken out. That graph and the COCO label map (as ``label_map.pbtxt``) go into the model directory, with a marker
file listing what was written, ready for ``make run``.

The directory is never left half-written: everything is staged in a temporary directory beside it (on the same
filesystem) and moved in only once it all checked out, and put back as it was if a move fails. A directory that
already holds a model is left alone unless ``force`` is given, with two exceptions: the same zoo model written
earlier and unchanged is left in place without downloading it again, and the default detector ``make run`` put
there (unchanged, by its marker) is replaced, as it was never the user's choice.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from converter import default_model
from converter.errors import FetchFailed, ModelDirOccupied
from converter.find import FROZEN_GRAPH, LABEL_MAP, find_model

DEFAULT_BASE_URL = "http://download.tensorflow.org/models/object_detection/"
BASE_URL_VARIABLE = "MODEL_ZOO_URL"
MARKER = ".classifyobjects-zoo.json"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_SCHEMES = ("http", "https", "file")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ZooModel:
    """One model of the TF1 zoo: its tarball's file name and pinned SHA-256."""

    name: str
    tarball: str
    sha256: str

    @property
    def top(self) -> str:
        """The directory the tarball holds everything in."""
        return self.tarball.removesuffix(".tar.gz")


MODELS = {
    model.name: model
    for model in (
        ZooModel(
            "ssdlite_mobilenet_v2_coco",
            "ssdlite_mobilenet_v2_coco_2018_05_09.tar.gz",
            "542445cce834dbfbb7df1991425d475e85a2d7ec68c60a4f262bb18aac10c8b2",
        ),
        ZooModel(
            "ssd_mobilenet_v2_coco",
            "ssd_mobilenet_v2_coco_2018_03_29.tar.gz",
            "b9380178b2e35333f1a735e39745928488bdabeb9ed20bc6fa07af8172cb5adc",
        ),
        ZooModel(
            "ssd_mobilenet_v1_coco",
            "ssd_mobilenet_v1_coco_2018_01_28.tar.gz",
            "8788f89108519fd1102b8a5c2ac861cf6d86603571b6ce5bbd1c245b7fe005e3",
        ),
    )
}


class Fetched(enum.StrEnum):
    """What ``place_zoo_model`` did."""

    WRITTEN = "wrote"
    REPLACED_DEFAULT = "replaced the default detector with"
    REPLACED = "replaced the model there with"
    CURRENT = "already holds"


def default_base_url() -> str:
    """The zoo's address: ``$MODEL_ZOO_URL`` when set, else the TF1 zoo's official one."""
    return os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL


def model_url(base_url: str, tarball: str) -> str:
    """The tarball's address under ``base_url`` (a directory, with or without its trailing slash)."""
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", urllib.parse.quote(tarball))


def is_safe_member(name: str) -> bool:
    """True for a relative tar member path that stays inside the archive's directory (no absolute path, no ``..``)."""
    if not name or PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith("\\"):
        return False
    return ".." not in re.split(r"[/\\]", name)


def graph_member(name: str) -> bool:
    """True for ``<top>/frozen_inference_graph.pb`` (a leading ``./`` allowed), the one member that is read."""
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    return len(parts) == 2 and parts[1] == FROZEN_GRAPH


def zoo_model(name: str) -> ZooModel:
    """The zoo model called ``name``; ``FetchFailed`` naming the known ones otherwise."""
    model = MODELS.get(name)
    if model is None:
        said = f"unknown model {name!r}" if name else "no model named"
        raise FetchFailed(f"{said}; the zoo models known are: {', '.join(MODELS)}")
    return model


def fetch_zoo_model(
    name: str,
    directory: Path,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout_s: float = TIMEOUT_S,
    force: bool = False,
) -> Path:
    """Put zoo model ``name`` into ``directory`` (see the module) and return its frozen graph there."""
    place_zoo_model(name, directory, base_url=base_url, sha256=sha256, timeout_s=timeout_s, force=force)
    return directory / FROZEN_GRAPH


def place_zoo_model(
    name: str,
    directory: Path,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout_s: float = TIMEOUT_S,
    force: bool = False,
) -> Fetched:
    """Put zoo model ``name`` into ``directory`` unless it is there already; what it did, or a ``ConversionError``."""
    model = zoo_model(name)
    expected = _expected_digest(model, sha256)
    url = model_url(base_url or default_base_url(), model.tarball)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise FetchFailed(f"the model zoo address must be an http://, https:// or file:// URL, not {url}")
    if directory.exists() and not directory.is_dir():
        raise FetchFailed(f"{directory} is not a directory")
    label_map = _coco_label_map()
    outcome = _outcome(directory, model, expected, label_map, force)
    if outcome is Fetched.CURRENT:
        return outcome
    with _staging(directory) as stage:
        tarball = stage / model.tarball
        found = _download(url, tarball, timeout_s)
        if found != expected:
            pinned = "the pinned" if sha256 is None else "the expected (--sha256)"
            raise FetchFailed(f"{url} has SHA-256 {found}, not {pinned} {expected}; refusing it")
        graph_digest = _extract_graph(tarball, stage / FROZEN_GRAPH)
        tarball.unlink()
        (stage / LABEL_MAP).write_bytes(label_map)
        record = {"written_by": "python -m converter fetch", "model": name, "url": url, "tarball_sha256": found}
        files = {FROZEN_GRAPH: graph_digest, LABEL_MAP: hashlib.sha256(label_map).hexdigest()}
        (stage / MARKER).write_text(json.dumps({**record, "files": files}, indent=2) + "\n", encoding="utf-8")
        _move_in(stage, directory, [FROZEN_GRAPH, LABEL_MAP, MARKER], obsolete=[default_model.MARKER])
    return outcome


def _expected_digest(model: ZooModel, sha256: str | None) -> str:
    if sha256 is None:
        return model.sha256
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise FetchFailed(f"--sha256 must be 64 hexadecimal digits, not {sha256!r}")
    return digest


def _coco_label_map() -> bytes:
    try:
        return default_model.COCO_LABEL_MAP.read_bytes()
    except OSError as exc:
        where = default_model.COCO_LABEL_MAP
        raise FetchFailed(f"cannot read the COCO label map {where}: {exc.strerror or exc}") from None


def _outcome(directory: Path, model: ZooModel, expected: str, label_map: bytes, force: bool) -> Fetched:
    """What fetching into ``directory`` will do; ``ModelDirOccupied`` when it would replace a model unasked."""
    if not directory.exists():
        return Fetched.WRITTEN
    ours = _unchanged_record(directory, MARKER)
    if ours is not None and ours.get("model") == model.name and ours.get("tarball_sha256") == expected and not force:
        return Fetched.CURRENT
    found = find_model(directory)
    stray = directory / LABEL_MAP
    if found is None and not _foreign(stray, label_map):
        return Fetched.WRITTEN
    if found is not None and _unchanged_record(directory, default_model.MARKER) is not None:
        return Fetched.REPLACED_DEFAULT
    if force:
        return Fetched.REPLACED
    what = f"{ours['model']}, fetched earlier" if ours is not None else str(found.path if found else stray)
    raise ModelDirOccupied(
        f"{directory} already holds a model ({what}); fetch into another directory, or pass --force "
        "(make model FORCE=1) to replace it"
    )


def _foreign(path: Path, content: bytes) -> bool:
    """True when ``path`` exists and is not a file holding ``content`` (a label map of the user's own, say)."""
    if not os.path.lexists(path):
        return False
    try:
        return not path.is_file() or path.read_bytes() != content
    except OSError:
        return True


def _unchanged_record(directory: Path, marker: str) -> dict[str, Any] | None:
    """The marker's record when every file it lists is still there as written; None otherwise."""
    try:
        record: dict[str, Any] = json.loads((directory / marker).read_text(encoding="utf-8"))
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict) or not files:
            return None
        for name, digest in files.items():
            if hashlib.sha256((directory / str(name)).read_bytes()).hexdigest() != digest:
                return None
    except (OSError, ValueError):
        return None
    return record


@contextlib.contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A scratch directory on ``directory``'s filesystem, so that moving files in is a rename; removed afterwards."""
    beside = directory.absolute().parent
    while not beside.exists():  # the directory will be made here, so its filesystem is this one's
        beside = beside.parent
    where = beside
    with contextlib.suppress(OSError):
        if directory.is_dir() and directory.stat().st_dev != beside.stat().st_dev:
            where = directory  # a mount point (a container's volume, say): only inside it is a rename
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{directory.absolute().name}.fetch-", dir=where))
    except OSError as exc:
        raise FetchFailed(
            f"cannot write into {directory}: no scratch directory in {where}: {exc.strerror or exc}"
        ) from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _download(url: str, target: Path, timeout_s: float) -> str:
    """Stream ``url`` into ``target``; its SHA-256, or ``FetchFailed`` naming the URL and why."""
    digest = hashlib.sha256()
    try:
        # The scheme was checked to be http, https or file: nothing else reaches urlopen.
        with urllib.request.urlopen(url, timeout=timeout_s) as response, target.open("wb") as out:  # noqa: S310
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchFailed(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) else None
        raise FetchFailed(f"cannot download {url}: {reason or exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else None
        raise FetchFailed(f"cannot download {url}: {reason or str(exc) or type(exc).__name__}") from None
    return digest.hexdigest()


def _extract_graph(tarball: Path, target: Path) -> str:
    """Copy the tarball's ``<top>/frozen_inference_graph.pb`` (and nothing else) to ``target``; its SHA-256."""
    digest = hashlib.sha256()
    try:
        archive = tarfile.open(tarball, "r:*")  # noqa: SIM115 - opened apart to tell 'not a tarball'
    except (tarfile.TarError, OSError):
        raise FetchFailed(f"cannot read {tarball.name}: it is not a tar archive (gzipped or not)") from None
    try:
        with archive:
            member = next((member for member in archive if graph_member(member.name)), None)
            if member is None:
                raise FetchFailed(f"{tarball.name} holds no <top>/{FROZEN_GRAPH}; it is not a TF1 zoo model")
            if not is_safe_member(member.name) or not member.isreg():
                raise FetchFailed(f"{tarball.name}: refusing member {member.name!r} (not a plain file inside it)")
            source = archive.extractfile(member)
            if source is None:
                raise FetchFailed(f"{tarball.name}: cannot read {member.name}")
            with source, target.open("wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise FetchFailed(f"cannot read {tarball.name} as a tarball: {reason}") from None
    return digest.hexdigest()


def _move_in(stage: Path, directory: Path, names: list[str], *, obsolete: list[str]) -> None:
    """Move ``names`` from ``stage`` into ``directory`` and take ``obsolete`` away: all of it, or none of it."""
    created = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    # What is replaced waits beside the stage (same filesystem), outside it: if putting it back fails, it survives.
    try:
        previous = Path(tempfile.mkdtemp(prefix=f"{stage.name}.previous-", dir=stage.parent))
    except OSError as exc:
        raise FetchFailed(f"cannot write into {directory}: {exc.strerror or exc}") from None
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in (*names, *obsolete):
            if os.path.lexists(directory / name):
                os.replace(directory / name, previous / name)
                moved_out.append(name)
        for name in names:
            os.replace(stage / name, directory / name)
            moved_in.append(name)
    except OSError as exc:
        kept = _put_back(directory, previous, moved_in, moved_out, created)
        where = f"; what was there is kept in {previous}" if kept else ""
        raise FetchFailed(f"cannot write into {directory}: {exc.strerror or exc}{where}") from None
    shutil.rmtree(previous, ignore_errors=True)


def _put_back(directory: Path, previous: Path, moved_in: list[str], moved_out: list[str], created: list[Path]) -> bool:
    """Undo a partial ``_move_in``; True when something could not be put back (``previous`` is then kept)."""
    for name in moved_in:
        with contextlib.suppress(OSError):
            (directory / name).unlink()
    stuck = False
    for name in moved_out:
        try:
            os.replace(previous / name, directory / name)
        except OSError:
            stuck = True
    for parent in created:  # deepest first
        with contextlib.suppress(OSError):
            parent.rmdir()
    if not stuck:
        shutil.rmtree(previous, ignore_errors=True)
    return stuck

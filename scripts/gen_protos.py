"""Regenerate the proxy's protobuf/gRPC modules in proxy/_proto from proxy/_proto/protos.

Usage: python scripts/gen_protos.py [--out DIR] [--check]

protoc (from the pinned grpcio-tools) writes ordinary generated code; this script then rewires it so that
every module imports its dependencies from `proxy._proto`, registers in the private pool
`proxy._proto._pool.POOL` instead of protobuf's default pool, and builds its classes with
`proxy._proto._pool.build_messages`, which leaves protobuf's default symbol database alone. The
well-known types the .proto files import (google/protobuf/any.proto, wrappers.proto) are generated into the
same private package for the same reason.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# protoc's output (the gencode version line, the serialized descriptors) depends on this exact version;
# it needs protobuf>=7.35.1,<8 and grpcio>=1.85.1, which the project's runtime pins satisfy.
GRPCIO_TOOLS_VERSION = "1.85.1"

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "proxy._proto"
DEFAULT_OUT = REPO / "proxy" / "_proto"
PROTOS = DEFAULT_OUT / "protos"

HEADER = "# Rewired by scripts/gen_protos.py: imports proxy._proto, registers in proxy._proto._pool.POOL.\n"

_WKT_IMPORT = re.compile(r'^import\s+(?:public\s+)?"(google/protobuf/\w+\.proto)";', re.MULTILINE)
_SERVICE = re.compile(r"^service\s+\w+", re.MULTILINE)


class GenError(Exception):
    """A one-line reason the generation could not be done."""


def _proto_files() -> list[str]:
    """Return the project's .proto files relative to PROTOS, sorted."""
    return sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))


def _well_known_imports(protos: list[str]) -> list[str]:
    """Return the google/protobuf/*.proto files the project's protos import."""
    found: set[str] = set()
    for rel in protos:
        found.update(_WKT_IMPORT.findall((PROTOS / rel).read_text(encoding="utf-8")))
    return sorted(found)


def _check_grpc_tools() -> Path:
    """Fail unless the pinned grpcio-tools is importable; return its bundled include directory."""
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        raise GenError(f"grpcio-tools is missing; pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}") from None
    if installed != GRPCIO_TOOLS_VERSION:
        raise GenError(
            f"grpcio-tools {installed} is installed, the committed code comes from {GRPCIO_TOOLS_VERSION}; "
            f"pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}"
        )
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise GenError("grpcio-tools is installed but its grpc_tools package cannot be found")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "_proto"


def _protoc(include: Path, out: Path, flag: str, files: list[str]) -> None:
    """Run grpcio-tools' protoc with one output flag over files."""
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}", f"{flag}={out}", *files]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GenError(f"protoc failed: {done.stderr.strip() or done.stdout.strip()}")


def _sub_exactly(pattern: str, repl: str, text: str, count: int, name: str) -> str:
    """Apply one rewrite and fail if it did not match count times (protoc's output format changed)."""
    new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if n != count:
        raise GenError(f"{name}: expected {count} match(es) of {pattern!r}, found {n}; update gen_protos.py")
    return new


def _rewire(text: str, module: str, rel: Path, wkts: list[str]) -> str:
    """Point one generated module at proxy._proto and the private pool."""
    name = rel.as_posix()
    wkt_modules = {Path(w).stem + "_pb2" for w in wkts}
    ours = r"(?:tensorflow|tensorflow_serving|xla)(?:\.\w+)*"
    text = re.sub(rf"^from ({ours}) import ", rf"from {PACKAGE}.\1 import ", text, flags=re.MULTILINE)
    text = re.sub(
        r"^from google\.protobuf import (\w+_pb2) as ",
        lambda m: f"from {PACKAGE}.google.protobuf import {m.group(1)} as " if m.group(1) in wkt_modules else m[0],
        text,
        flags=re.MULTILINE,
    )
    if name.endswith("_pb2.py"):
        text = _sub_exactly(
            r"^from google\.protobuf import descriptor_pool as _descriptor_pool$",
            f"from {PACKAGE} import _pool",
            text,
            1,
            name,
        )
        text = _sub_exactly(
            r"_descriptor_pool\.Default\(\)\.AddSerializedFile\(",
            "_pool.POOL.AddSerializedFile(",
            text,
            1,
            name,
        )
        text = _sub_exactly(
            rf"_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, '{re.escape(module)}'",
            f"_pool.build_messages(DESCRIPTOR, '{PACKAGE}.{module}'",
            text,
            1,
            name,
        )
    leftover = re.search(rf"^(?:from|import) {ours}\b|_descriptor_pool", text, re.MULTILINE)
    if leftover:
        raise GenError(f"{name}: unrewired line {leftover[0]!r}; update scripts/gen_protos.py")
    return HEADER + text


def generate(out: Path) -> list[Path]:
    """Generate the rewired modules under out; return the files written, relative to out."""
    include = _check_grpc_tools()
    protos = _proto_files()
    if not protos:
        raise GenError(f"no .proto files under {PROTOS}")
    wkts = _well_known_imports(protos)
    services = [p for p in protos if _SERVICE.search((PROTOS / p).read_text(encoding="utf-8"))]

    with tempfile.TemporaryDirectory(prefix="gen_protos_") as tmp_name:
        tmp = Path(tmp_name)
        _protoc(include, tmp, "--python_out", protos + wkts)
        _protoc(include, tmp, "--grpc_python_out", services)
        files = {
            rel: _rewire((tmp / rel).read_text(encoding="utf-8"), ".".join(rel.with_suffix("").parts), rel, wkts)
            for rel in sorted(p.relative_to(tmp) for p in tmp.rglob("*.py"))
        }
    # Regular packages (not namespace ones) so setuptools' package discovery ships them.
    for rel in list(files):
        files.update({parent / "__init__.py": "" for parent in rel.parents if parent != Path(".")})

    # Everything is rewired before anything is touched, so a failure leaves the old tree intact.
    for top in {rel.parts[0] for rel in files}:
        shutil.rmtree(out / top, ignore_errors=True)
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8")
    return sorted(files)


def generated_files(root: Path) -> set[Path]:
    """Return every file under root's generated package trees, relative to root."""
    return {
        p.relative_to(root)
        for top in ("google", "tensorflow", "tensorflow_serving", "xla")
        if (root / top).is_dir()
        for p in (root / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _check(out: Path) -> list[str]:
    """Return how the committed files under out differ from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="gen_protos_check_") as tmp_name:
        fresh = Path(tmp_name)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(out)
        problems = [f"missing: {p}" for p in sorted(want - have)]
        problems += [f"stale: {p}" for p in sorted(have - want)]
        problems += [f"differs: {p}" for p in sorted(want & have) if not filecmp.cmp(fresh / p, out / p, shallow=False)]
    return problems


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with --check, verify) the generated modules; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="package directory to write into")
    parser.add_argument("--check", action="store_true", help="only report whether --out is up to date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = _check(args.out)
            for line in problems:
                print(line)
            if problems:
                print("gen_protos: generated code is stale; run python scripts/gen_protos.py", file=sys.stderr)
                return 1
            return 0
        for rel in generate(args.out):
            print(args.out / rel)
    except GenError as exc:
        print(f"gen_protos: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""scripts/gen_protos.py reproduces the committed proxy/_proto modules."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_protos.py"
PACKAGE = REPO / "proxy" / "_proto"
GENERATED_TOPS = ("google", "tensorflow", "tensorflow_serving", "xla")


def _generated(root: Path) -> dict[str, bytes]:
    """Map every file of the generated package trees under root to its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for top in GENERATED_TOPS
        if (root / top).is_dir()
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the generator has just written into."""
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed; it is the dev dependency that regenerates proxy/_proto")
    out = tmp_path_factory.mktemp("gen_protos")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_regeneration_reproduces_the_committed_modules_byte_for_byte(fresh: Path) -> None:
    """Running the generator into an empty directory writes exactly the committed files, byte for byte."""
    committed, regenerated = _generated(PACKAGE), _generated(fresh)
    assert sorted(regenerated) == sorted(committed)
    assert [name for name in committed if committed[name] != regenerated[name]] == []


def test_every_generated_module_uses_the_private_pool(fresh: Path) -> None:
    """Each generated module registers in proxy._proto._pool.POOL and imports only proxy._proto's protos."""
    modules = {name: data.decode() for name, data in _generated(fresh).items() if name.endswith("_pb2.py")}
    assert len(modules) >= 15
    for name, text in modules.items():
        assert "_pool.POOL.AddSerializedFile(" in text, name
        assert "Default()" not in text.replace("_symbol_database.Default()", ""), name
        imports = [line for line in text.splitlines() if line.startswith(("from ", "import "))]
        assert not [line for line in imports if line.split()[1].split(".")[0] in GENERATED_TOPS[1:]], name
        assert not [line for line in imports if re.match(r"from google\.protobuf import \w+_pb2\b", line)], name


def test_check_mode_passes_on_the_committed_tree() -> None:
    """`gen_protos.py --check` exits 0 when the committed modules are current."""
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed; it is the dev dependency that regenerates proxy/_proto")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stderr

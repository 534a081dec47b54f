"""``python -m proxy``'s shared directories: made by the master, removed by it alone.

gunicorn forks every worker from inside ``main``'s ``with`` blocks, and a worker that exits raises ``SystemExit``
up through them: a child unwinding must leave the directories the other workers still use.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from proxy.__main__ import _frame_cache_directory, _metrics_directory
from proxy.settings import Settings


def metrics_dir() -> AbstractContextManager[Path]:
    """``_metrics_directory`` as a context giving the directory it made."""
    from contextlib import contextmanager

    @contextmanager
    def made() -> Iterator[Path]:
        with _metrics_directory():
            yield Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    return made()


def frames_dir() -> AbstractContextManager[Path]:
    """``_frame_cache_directory`` as a context giving the directory it made."""
    from contextlib import contextmanager

    @contextmanager
    def made() -> Iterator[Path]:
        with _frame_cache_directory(dataclasses.replace(Settings(), frame_cache_s=5.0)) as settings:
            assert settings.frame_cache_dir is not None
            yield settings.frame_cache_dir

    return made()


@pytest.mark.parametrize("context", [metrics_dir, frames_dir], ids=["metrics", "frame cache"])
def test_a_child_unwinding_leaves_the_directory_the_master_removes_it(
    context: Callable[[], AbstractContextManager[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set (empty: "none yet"), not deleted: monkeypatch then restores the environment _metrics_directory writes to,
    # and no later test in this process inherits a directory that is gone.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    parent = os.getpid()
    try:
        with context() as directory:
            assert directory.is_dir()
            child = os.fork()
            if child == 0:
                raise SystemExit(0)  # a worker exiting, as gunicorn's does: up through the with block
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert directory.is_dir(), "a worker exiting removed the master's directory"
    except SystemExit:
        if os.getpid() != parent:
            os._exit(0)  # the child, unwound: it must never return into pytest
        raise
    assert not directory.exists()  # the master removes it


@pytest.mark.parametrize(("hard", "warned"), [(4096, False), (512, True)])
def test_the_open_files_limit_is_raised_to_the_hard_one_and_a_short_one_is_named(hard: int, warned: bool) -> None:
    """A process started with a soft limit of 160 open files (under MAX_CONNECTIONS) raises it to the hard limit
    for itself and its workers; a hard limit still short of MAX_CONNECTIONS plus spare is a warning naming both."""
    script = (
        "import resource; from proxy.__main__ import raise_open_files_limit; "
        "print(raise_open_files_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        ["sh", "-c", f'ulimit -S -n 160 && ulimit -H -n {hard} && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [str(hard), str(hard)]
    assert ("the open-files limit is 512 (ulimit -n), under MAX_CONNECTIONS=1000" in done.stderr) is warned

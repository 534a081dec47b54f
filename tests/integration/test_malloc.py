"""The worker's malloc tuning (``proxy.__main__._tune_malloc``), in processes of their own: what one request of a
4000x3000 JPEG holds at once stays in the heap for the next, instead of being faulted back in page by page."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from harness.processes import REPO

# One app thread serving 4000x3000 requests one after another: each holds five 2.25 MB buffers (the 1000x750
# decode, its pixels, the tensor, the message and gRPC's copy) and frees them; the page faults of the rounds after
# the first are what every request would pay again.
_ROUNDS = r"""
import json, resource, sys, threading
from proxy.__main__ import _tune_malloc
if sys.argv[1] == "tuned":
    _tune_malloc(None, None)
faults = []
def serve():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        held = [b"x" * (1000 * 750 * 3) for _ in range(5)]
        del held
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=serve)
thread.start()
thread.join()
print(json.dumps(faults[1:]))
"""


def _faults(mode: str) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stdout))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_large_requests_buffers_stay_in_the_heap_between_requests() -> None:
    """Untuned, glibc returns the freed buffers and each round faults them in again (about 2,700 pages); tuned, the
    rounds after the first fault almost none."""
    untuned, tuned = _faults("default"), _faults("tuned")
    assert min(untuned) > 2000, untuned  # the cost being removed is there without the tuning
    assert max(tuned) < 50, tuned

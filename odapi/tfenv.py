"""How this project's processes start TensorFlow: quietly where there is no GPU, without hiding one that is there.

TensorFlow probes for CUDA at start-up and prints what it finds in C++ log lines (``failed call to cuInit ...``
on every machine without an NVIDIA driver). Where no NVIDIA device exists, those lines are noise; where one does,
they are how a user learns why it is not used, so they stay. A user's own ``TF_CPP_MIN_LOG_LEVEL`` always wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

_NVIDIA = (Path("/dev/nvidia0"), Path("/proc/driver/nvidia"))


def has_nvidia_device() -> bool:
    """True when the machine shows an NVIDIA driver or device (the container toolkit mounts both)."""
    return any(path.exists() for path in _NVIDIA)


def quiet_tensorflow(env: MutableMapping[str, str] | None = None, *, verbose: bool = False) -> None:
    """Set TensorFlow's C++ log level in ``env`` (the process environment by default) unless the user set it:
    errors only on a machine with a GPU, nothing at all without one; everything when ``verbose``."""
    env = os.environ if env is None else env
    if verbose:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    elif has_nvidia_device():
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    else:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

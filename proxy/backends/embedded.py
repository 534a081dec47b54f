"""The embedded backend: the newest SavedModel version under MODEL_BASE_PATH, run in this process by TensorFlow."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.layout import latest_version
from proxy.backends import ModelStatus, VersionState
from proxy.detections import Detections
from proxy.errors import BackendError, ModelNotReady, ProxyError
from proxy.status_codes import error_for_code

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    version: int
    function: Any  # the signature's concrete function
    input_key: str
    owner: Any  # the loaded SavedModel: the concrete function alone does not keep its variables alive


POLL_S = 5.0  # how often to look for a newer version on disk, like TF Serving's file system polling


class EmbeddedBackend:
    """Loads the newest version lazily and runs it with TensorFlow in this process.

    Like TF Serving, it notices a newer version directory (at most every ``POLL_S``), loads it in the background
    and switches to it once loaded; requests keep using the old version meanwhile.
    """

    def __init__(self, base_path: Path, signature_name: str = "serving_default") -> None:
        self._base = base_path
        self._signature = signature_name
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._loader_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._load_error: str | None = None
        self._checked_at = time.monotonic()
        self._failed_version: int | None = None  # a newer version that did not load is not retried

    def predict(self, image: np.ndarray) -> Detections:
        """Run one image through the signature and read the OD API outputs."""
        import tensorflow as tf  # imported here so the gRPC mode never pays for it

        model = self._ensure_loaded()
        self._look_for_newer(model.version)
        try:
            outputs = model.function(**{model.input_key: tf.constant(image[np.newaxis])})
        except tf.errors.OpError as exc:
            raise error_for_code(exc.error_code, f"model {self._base}: {_first_line(exc.message)}") from None
        return Detections.from_outputs({name: tensor.numpy() for name, tensor in outputs.items()})

    def status(self) -> ModelStatus:
        """Ready once the model has loaded. Never blocks: it starts a background load when none is under way."""
        loaded = self._loaded
        if loaded is not None:
            self._look_for_newer(loaded.version)
            return ModelStatus(ready=True, version=loaded.version)
        self._start_loader()
        return ModelStatus(ready=False, detail=self._load_error or "the model is loading")

    def _look_for_newer(self, current: int) -> None:
        now = time.monotonic()
        if now - self._checked_at < POLL_S:
            return
        self._checked_at = now
        found = latest_version(self._base)
        if found is not None and found[0] > current and found[0] != self._failed_version:
            self._start_loader()

    def _start_loader(self) -> None:
        with self._loader_lock:
            if self._loader is None or not self._loader.is_alive():
                self._loader = threading.Thread(target=self._load_in_background, name="model-loader", daemon=True)
                self._loader.start()

    def _load_in_background(self) -> None:
        try:
            fresh = self._load()
        except ProxyError as exc:
            self._load_error = exc.message
            found = latest_version(self._base)
            self._failed_version = found[0] if found else None
            log.warning("cannot load the newest version under %s: %s", self._base, exc.message)
            return
        with self._lock:
            if self._loaded is None or fresh.version > self._loaded.version:
                if self._loaded is not None:
                    log.info("now serving version %d from %s", fresh.version, self._base)
                self._loaded = fresh
        self._load_error = None

    def versions(self) -> list[VersionState]:
        """The loaded version (AVAILABLE), or the newest on disk while it loads or after it failed to."""
        status = self.status()
        if status.ready and status.version is not None:
            return [VersionState(status.version, "AVAILABLE")]
        found = latest_version(self._base)
        if found is None:
            return []
        if self._load_error:
            return [VersionState(found[0], "END", self._load_error)]
        return [VersionState(found[0], "LOADING")]

    def start(self) -> None:
        """Load the model in the background."""
        self.status()

    def close(self) -> None:
        """Drop the model so TensorFlow can free it."""
        with self._lock:
            self._loaded = None

    def _ensure_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        found = latest_version(self._base)
        if found is None:
            raise ModelNotReady(
                f"no model under {self._base}: convert one with `python -m converter "
                f"static/frozen_inference_graph.pb {self._base}` (make run does this)",
                retry_after_s=5,
            )
        version, path = found
        return _load_signature(path, version, self._signature)


def _load_signature(path: Path, version: int, signature: str) -> _Loaded:
    import tensorflow as tf

    log.info("loading model version %d from %s", version, path)
    try:
        model = tf.saved_model.load(str(path), tags=["serve"])
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise BackendError(f"cannot load the SavedModel at {path}: {_first_line(str(exc))}") from None
    signatures = dict(model.signatures)
    if signature not in signatures:
        raise BackendError(
            f'model at {path} has no signature "{signature}" (it has: {", ".join(sorted(signatures)) or "none"})'
        )
    function = signatures[signature]
    _, inputs = function.structured_input_signature
    if len(inputs) != 1:
        raise BackendError(f"signature {signature} of {path} takes {len(inputs)} inputs; an image detector takes one")
    input_key, spec = next(iter(inputs.items()))
    if spec.dtype != tf.uint8 or spec.shape.rank != 4:
        raise BackendError(
            f"signature {signature} input {input_key} is {spec.dtype.name} {spec.shape}; "
            "expected an image tensor uint8 [batch, height, width, 3]"
        )
    return _Loaded(version=version, function=function, input_key=input_key, owner=model)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"

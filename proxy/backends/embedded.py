"""The embedded backend: the newest model version under a base path, run by TensorFlow in this process.

Like TF Serving, it notices a newer version directory (looking at most every ``POLL_S``), loads it in the
background and switches to it once loaded; requests keep the old version meanwhile. Each version is loaded by one
thread at a time: requests that arrive while nothing is loaded yet wait for that load (until their deadline).

A load that fails, for whatever reason (a broken SavedModel, a label map that is not UTF-8, an error TensorFlow
raises), marks that version failed with its reason, in the log, ``/readyz`` and ``/v1/models``; the served version
keeps answering and a newer version is still picked up. As TF Serving retries a failed load, a failed version is
tried again ``LoadRetries.retries`` times, the wait doubling from ``LoadRetries.first_wait_s`` (a version still being
copied into place fails its first try), then given up until a newer one appears.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odapi.contract import ANSWER_OUTPUTS, REQUIRED_OUTPUTS, InputType, graph_ops, pixel_input_type, string_input_type
from odapi.layout import LABEL_MAP, latest_version, read_manifest
from proxy.backends import CallLimit, LabelMaps, ModelStatus, Prediction, RequestCalls, VersionState, model_input
from proxy.detections import Detections
from proxy.errors import BackendError, InvalidImage, ModelNotReady, ProxyError
from proxy.images import ModelImage
from proxy.labels import LabelMap
from proxy.status_codes import INVALID_ARGUMENT, error_for_code

log = logging.getLogger(__name__)

POLL_S = 5.0  # how often to look for a newer version on disk, like TF Serving's file system polling


@dataclass(frozen=True)
class LoadRetries:
    """How often a version that failed to load is tried again (MODEL_LOAD_RETRIES, MODEL_LOAD_RETRY_S)."""

    retries: int
    first_wait_s: float

    def wait_s(self, attempts: int) -> float | None:
        """The wait before the next try after ``attempts`` failed ones, or None once the retries are spent."""
        return self.first_wait_s * 2 ** (attempts - 1) if attempts <= self.retries else None


@dataclass(frozen=True)
class _Failure:
    """A version that failed to load: why, how many tries so far, and when the next one is due (None: given up)."""

    reason: str
    attempts: int
    retry_at: float | None

    def describe(self, name: str, version: int, now: float) -> str:
        """One line for /readyz, /v1/models and the clients, naming no path."""
        return f"model {name} version {version} failed to load: {self.outlook(now)}"

    def outlook(self, now: float) -> str:
        """The reason, and whether and when it will be tried again."""
        if self.retry_at is None:
            return self.reason + (f" (gave up after {self.attempts} tries)" if self.attempts > 1 else "")
        return self.reason + f" (try {self.attempts}; trying again in {max(0.0, self.retry_at - now):.0f} s)"


@dataclass(frozen=True)
class _Loaded:
    version: int
    function: Any  # the signature's concrete function
    input_key: str
    input_type: InputType
    rank: int | None
    labels: LabelMap  # the version's own label map, else the configured fallback
    owner: Any  # the loaded SavedModel: the concrete function alone does not keep its variables alive


class EmbeddedBackend:
    """Loads the newest version of one model and runs it with TensorFlow in this process."""

    def __init__(
        self,
        name: str,
        base_path: Path,
        *,
        signature_name: str,
        calls: CallLimit,
        labels: LabelMaps,
        retries: LoadRetries,
        input_type: InputType | None = None,
        batch_threads: int = 4,
    ) -> None:
        self._name = name
        self._base = base_path
        self._signature_name = signature_name
        self._override = input_type
        self._calls = calls
        self._labels = labels
        self._batch_threads = batch_threads
        self._retries = retries
        self._lock = threading.Lock()
        self._current: _Loaded | None = None
        self._loading: Future[_Loaded] | None = None
        self._loading_version: int | None = None
        self._failed: dict[int, _Failure] = {}
        self._checked_at = float("-inf")
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- the Backend interface ---------------------------------------------------------------------------------

    def predict(self, images: Sequence[ModelImage], deadline: float) -> list[Prediction | ProxyError]:
        """Run each image through the served version; a batch's images (or a frame's tiles) run side by side in a
        small pool, at most the request's share of calls at once."""
        model = self._model(deadline)
        slots = self._calls.request(len(images))
        if len(images) == 1:
            return [self._run(model, images[0], deadline, slots)]
        pool = self._batch_pool()
        futures = [pool.submit(self._run, model, image, deadline, slots) for image in images]
        return [future.result() for future in futures]

    def labels(self) -> LabelMap | None:
        """The served version's label map, once one is loaded."""
        current = self._current
        return current.labels if current is not None else None

    def status(self) -> ModelStatus:
        """Ready once a version is loaded (with a word on a newer one that failed). Never blocks: it starts a
        background load when one is due."""
        self._refresh()
        current = self._current
        if current is not None:
            failed = self._failed_newest()
            return ModelStatus(ready=True, version=current.version, detail=failed[1] if failed else "")
        return ModelStatus(ready=False, detail=self._not_ready_reason())

    def versions(self) -> list[VersionState]:
        """The served version (AVAILABLE), the one loading (LOADING) and those that failed (END, with the error)."""
        self._refresh()
        now = time.monotonic()
        with self._lock:
            states = [
                VersionState(version, "END", failure.describe(self._name, version, now))
                for version, failure in self._failed.items()
                if version != self._loading_version
            ]
            if self._current is not None:
                states.append(VersionState(self._current.version, "AVAILABLE"))
            if self._loading_version is not None and self._loading is not None:
                states.append(VersionState(self._loading_version, "LOADING"))
        return sorted(states, key=lambda state: state.version)

    def device(self) -> str:
        """``GPU`` when this process's TensorFlow sees one, else ``CPU``."""
        return _device()

    def start(self) -> None:
        """Load the newest version in the background."""
        self._refresh(force=True)

    def close(self) -> None:
        """Stop the batch pool and drop the model so TensorFlow can free it."""
        with self._lock:
            self._closed = True
            self._current = None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- loading -----------------------------------------------------------------------------------------------

    def _model(self, deadline: float) -> _Loaded:
        """The served version; while the first one loads, wait for that load until ``deadline``."""
        self._refresh()
        current = self._current
        if current is not None:
            return current
        with self._lock:
            loading = self._loading
        if loading is None:
            raise self._unavailable()
        try:
            return loading.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ModelNotReady(f"model {self._name} is still loading; try again shortly", retry_after_s=2) from None
        except ProxyError:
            raise self._unavailable() from None

    def _unavailable(self) -> ProxyError:
        """Why nothing is served: a version that failed to load and is given up (the model's problem: 502, until a
        newer version is converted), or none yet, or one to be tried again (503: try again)."""
        with self._lock:
            newest = max(self._failed) if self._failed and self._loading is None else None
            failure = self._failed.get(newest) if newest is not None else None
        if failure is None:
            return ModelNotReady(self._not_ready_reason(), retry_after_s=5)
        if failure.retry_at is None:
            return BackendError(self._not_ready_reason())
        wait = max(1, math.ceil(failure.retry_at - time.monotonic()))
        return ModelNotReady(self._not_ready_reason(), retry_after_s=wait)

    def _not_ready_reason(self) -> str:
        with self._lock:
            if self._loading is not None:
                return f"model {self._name} is loading version {self._loading_version}"
        failed = self._failed_newest()
        if failed is not None:
            return failed[1]
        # No path here: this text reaches clients (and the open /readyz); the log has the directory.
        return f"model {self._name} has no version to serve yet: convert one into its base path (make run does)"

    def _failed_newest(self) -> tuple[int, str] | None:
        """The newest version that failed to load, when it is newer than the served one and not loading now."""
        now = time.monotonic()
        with self._lock:
            if not self._failed or self._loading is not None:
                return None
            version = max(self._failed)
            if self._current is not None and version <= self._current.version:
                return None
            return version, self._failed[version].describe(self._name, version, now)

    def _refresh(self, *, force: bool = False) -> None:
        """Start loading the newest version on disk if it is newer than the served one and not failed (or its
        next try is due); looks at the disk at most every ``POLL_S`` unless forced or a retry is due."""
        now = time.monotonic()
        with self._lock:
            retry_due = any(f.retry_at is not None and f.retry_at <= now for f in self._failed.values())
            recent = now - self._checked_at < POLL_S
            if self._closed or self._loading is not None or (recent and not force and not retry_due):
                return
            self._checked_at = now
            found = latest_version(self._base)
            if found is None:
                if self._current is None:
                    log.info("model %s: no version under %s yet", self._name, self._base)
                return
            version, path = found
            failure = self._failed.get(version)
            if self._current is not None and version <= self._current.version:
                return
            if failure is not None and (failure.retry_at is None or failure.retry_at > now):
                return
            loading: Future[_Loaded] = Future()
            self._loading, self._loading_version = loading, version
        threading.Thread(
            target=self._load, args=(version, path, loading), name=f"load-{self._name}", daemon=True
        ).start()

    def _load(self, version: int, path: Path, loading: Future[_Loaded]) -> None:
        """Load ``version`` in this background thread. Whatever goes wrong marks the version failed (with a retry
        due, or given up) and leaves the backend serving what it served: the thread never dies with ``_loading``
        set, which would stop every later load."""
        try:
            fresh = _load_version(
                self._name,
                version,
                path,
                signature_name=self._signature_name,
                override=self._override,
                labels=self._labels,
            )
        except Exception as exc:
            self._record_failure(version, path, exc, loading)
            return
        with self._lock:
            previous = self._current
            if previous is None or fresh.version > previous.version:
                self._current = fresh
            self._failed.pop(version, None)
            self._loading = self._loading_version = None
        if previous is None:
            log.info("model %s: serving version %d (%s input)", self._name, version, fresh.input_type)
        else:
            log.info("model %s: switched from version %d to %d", self._name, previous.version, version)
        loading.set_result(fresh)

    def _record_failure(self, version: int, path: Path, exc: Exception, loading: Future[_Loaded]) -> None:
        """Mark ``version`` failed, with its next try due or given up, and wake the requests waiting for it."""
        # An error _load_version does not name is a bug or a surprise from TensorFlow: the log gets its traceback;
        # clients and /readyz get its one line, without the directory.
        expected = isinstance(exc, ProxyError)
        reason = exc.message if isinstance(exc, ProxyError) else ProxyError(f"{type(exc).__name__}: {exc}").message
        reason = reason.replace(str(path), f"<version {version}>").replace(str(self._base), "<base path>")
        now = time.monotonic()
        with self._lock:
            attempts = (self._failed[version].attempts if version in self._failed else 0) + 1
            wait = self._retries.wait_s(attempts)
            failure = _Failure(reason, attempts, None if wait is None else now + wait)
            self._failed[version] = failure
            self._loading = self._loading_version = None
        loading.set_exception(BackendError(failure.describe(self._name, version, now)))
        if not expected:
            log.exception("model %s: loading version %d at %s raised", self._name, version, path)
        log.warning("model %s: version %d at %s failed to load: %s", self._name, version, path, failure.outlook(now))

    def _batch_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._batch_threads, thread_name_prefix=f"batch-{self._name}")
            return self._pool

    # -- running -----------------------------------------------------------------------------------------------

    def _run(self, model: _Loaded, image: ModelImage, deadline: float, slots: RequestCalls) -> Prediction | ProxyError:
        import tensorflow as tf  # imported here so the gRPC mode never pays for it

        try:
            slots.acquire(deadline)
            try:
                value = model_input(image, model.input_type, model.rank)
                started = time.perf_counter()
                outputs = model.function(**{model.input_key: tf.constant(value)})
                inference_s = time.perf_counter() - started
            finally:
                slots.release()
            detections = Detections.from_outputs(
                {name: tensor.numpy() for name, tensor in outputs.items() if name in ANSWER_OUTPUTS}
            )
            return Prediction(detections, model.labels, model.version, inference_s)
        except ProxyError as exc:
            return exc
        except tf.errors.OpError as exc:
            if exc.error_code == INVALID_ARGUMENT and model.input_type.is_encoded:
                return InvalidImage(f"the model's image decoder cannot read this image: {exc.message}")
            return error_for_code(exc.error_code, f"model {self._name} version {model.version}: {exc.message}")


@functools.cache
def _device() -> str:
    import tensorflow as tf

    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def _load_version(
    name: str, version: int, path: Path, *, signature_name: str, override: InputType | None, labels: LabelMaps
) -> _Loaded:
    import tensorflow as tf

    log.info("model %s: loading version %d from %s", name, version, path)
    try:
        model = tf.saved_model.load(str(path), tags=["serve"])
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise BackendError(f"cannot load version {version} of model {name}: {exc}") from None
    signatures = dict(model.signatures)
    if signature_name not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise BackendError(f'model {name} version {version} has no signature "{signature_name}" (it has: {known})')
    function = signatures[signature_name]
    _, inputs = function.structured_input_signature
    if len(inputs) != 1:
        found = ", ".join(f"{key} ({spec.dtype.name})" for key, spec in sorted(inputs.items())) or "none"
        raise BackendError(f"model {name} version {version} takes inputs {found}; a detector takes one image input")
    input_key, spec = next(iter(inputs.items()))
    missing = [output for output in REQUIRED_OUTPUTS if output not in function.structured_outputs]
    if missing:
        raise BackendError(f"model {name} version {version} lacks outputs {', '.join(missing)}")
    manifest = read_manifest(path)
    input_type = override or (manifest.input_type if manifest is not None else None) or _input_type(function, spec)
    if input_type is None:
        raise BackendError(
            f"model {name} version {version} takes {input_key} of {spec.dtype.name} {spec.shape}; a detector takes "
            "uint8 or float32 pixels [batch, height, width, 3], or a string of image bytes"
        )
    labels_file = path / LABEL_MAP
    try:
        labels_text = labels_file.read_text(encoding="utf-8") if labels_file.is_file() else None
    except UnicodeDecodeError as exc:
        raise BackendError(f"its label map is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    # Parsed with the version, once: a malformed label map fails the load rather than every request.
    label_map = labels.parse(labels_text, str(labels_file))
    return _Loaded(version, function, input_key, input_type, spec.shape.rank, label_map, owner=model)


def _input_type(function: Any, spec: Any) -> InputType | None:
    """What a model converted elsewhere takes: pixels by dtype; for strings, a ParseExample op means tf.Example."""
    if spec.dtype.name != "string":
        return pixel_input_type(spec.dtype.name) if spec.shape.rank in (None, 4) else None
    return string_input_type(graph_ops(function.graph.as_graph_def()))

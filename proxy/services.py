"""The models a process serves and the resources behind them, with one owner that closes them all.

``Services.build(settings)`` opens what the settings ask for (the gRPC channel to TF Serving, or nothing until the
embedded models load), and ``close()`` releases it: the app factory builds one, the server closes it when its
worker exits, tests close theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flask import Flask

from proxy.backends import Backend, CallLimit, LabelMaps, Model, ModelStatus
from proxy.errors import NotFound
from proxy.framecache import FrameCache, create_directory, remove_directory
from proxy.images import DecodeBudget, ImageLimits
from proxy.labels import LabelMap
from proxy.settings import Settings

log = logging.getLogger(__name__)

EXTENSION = "classifyobjects"  # the key of a Flask app's services in ``app.extensions``


@dataclass
class Services:
    """What the routes work with: settings, the models in configuration order (the first is the default), the
    image limits, and the resources to close."""

    settings: Settings
    models: Mapping[str, Model]
    image_limits: ImageLimits
    frame_cache: FrameCache | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, backends: Mapping[str, Backend] | None = None) -> Services:
        """Services for ``settings``; ``backends`` by model name replace the ones the settings would build."""
        closers: list[Callable[[], None]] = []
        if backends is None:
            backends = _make_backends(settings, closers)
        limits = ImageLimits.from_settings(
            settings, DecodeBudget(settings.decode_memory_bytes, wait_s=settings.request_timeout_s)
        )
        models = {config.name: Model(config.name, backends[config.name]) for config in settings.model_configs}
        # Backends close before the connection they share (registered first, closed last).
        closers[:0] = [backend.close for backend in backends.values()]
        return cls(settings, models, limits, _frame_cache(settings, closers), closers)

    def install(self, app: Flask) -> None:
        """Make these the services of ``app`` (``of`` finds them)."""
        app.extensions[EXTENSION] = self

    @staticmethod
    def of(app: Flask) -> Services:
        """The services ``install`` gave ``app``."""
        found: Services = app.extensions[EXTENSION]
        return found

    @property
    def default(self) -> Model:
        """The model answering requests that name none."""
        return next(iter(self.models.values()))

    def model(self, name: str | None) -> Model:
        """The model called ``name`` (None: the default), or ``NotFound`` naming the ones there are."""
        if name is None:
            return self.default
        found = self.models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name[:64]!r}; this server has: {', '.join(self.models)}")
        return found

    def statuses(self) -> dict[str, ModelStatus]:
        """Every model's status, by name, asked of all at once: bounded by the slowest backend's bound (TF Serving's
        status call: 2 s), not by their sum, so a readiness probe with several models answers within its timeout
        when TF Serving hangs."""
        models = list(self.models.items())
        if len(models) == 1:
            return {name: model.backend.status() for name, model in models}
        with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="status") as pool:
            asked = [(name, pool.submit(model.backend.status)) for name, model in models]
            return {name: future.result() for name, future in asked}

    def start(self) -> None:
        """Start every backend loading (embedded) or learning its signature (TF Serving) in the background."""
        for model in self.models.values():
            model.backend.start()

    def close(self) -> None:
        """Close the backends, then what they share; safe to call more than once."""
        closers, self._closers = self._closers, []
        for close in closers:
            try:
                close()
            except Exception:  # one failing closer must not keep the others open
                log.exception("closing %r failed", close)


def _frame_cache(settings: Settings, closers: list[Callable[[], None]]) -> FrameCache | None:
    """The frame cache the server's workers share (``frame_cache_dir``), or one of these services' own."""
    if settings.frame_cache_s <= 0:
        return None
    directory = settings.frame_cache_dir
    if directory is None:
        directory = create_directory()
        closers.append(lambda: remove_directory(directory))
    return FrameCache(directory, ttl_s=settings.frame_cache_s, max_entries=settings.frame_cache_entries)


def _make_backends(settings: Settings, closers: list[Callable[[], None]]) -> dict[str, Backend]:
    """A backend per configured model: TF Serving over one shared gRPC channel when SERVING_ADDRESS is set,
    else in-process TensorFlow. Label maps named in the settings are read (and checked) now."""
    calls = CallLimit(settings.max_backend_calls, settings.calls_per_request)
    fallbacks = {
        config.name: LabelMaps(LabelMap.load(config.label_map) if config.label_map is not None else None)
        for config in settings.model_configs
    }
    if settings.serving_address:
        from proxy.backends.serving import ModelSpec, ServingBackend, ServingConnection

        connection = ServingConnection(settings.serving_address)
        closers.append(connection.close)
        return {
            config.name: ServingBackend(
                ModelSpec(
                    config.name,
                    settings.signature_name,
                    settings.model_version,
                    settings.model_version_label,
                    settings.input_type,
                ),
                connection,
                calls=calls,
                labels=fallbacks[config.name],
                request_timeout_s=settings.request_timeout_s,
            )
            for config in settings.model_configs
        }
    from proxy.backends.embedded import EmbeddedBackend, LoadRetries

    retries = LoadRetries(settings.model_load_retries, settings.model_load_retry_s)
    return {
        config.name: EmbeddedBackend(
            config.name,
            config.base_path,
            signature_name=settings.signature_name,
            calls=calls,
            labels=fallbacks[config.name],
            retries=retries,
            input_type=settings.input_type,
            batch_threads=max(2, min(settings.threads, settings.max_batch_images)),
        )
        for config in settings.model_configs
    }

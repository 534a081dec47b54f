"""Typed settings, read once from the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.errors import ConfigError

MB = 1024 * 1024


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelConfig:
    """One model the proxy serves: its name in TF Serving, its versions on disk (embedded mode), its label map."""

    name: str
    base_path: Path
    label_map: Path


@dataclass(frozen=True)
class Settings:
    """Everything the proxy can be configured with; ``Settings.from_env()`` is the only reader of ``os.environ``."""

    port: int = 8000
    host: str = "0.0.0.0"  # noqa: S104  (a server in a container must listen beyond loopback)
    model_dir: Path = Path("static")
    model_base_path: Path = Path("models/detector")
    model_name: str = "detector"
    label_map: Path | None = None  # None: MODEL_DIR/label_map.pbtxt
    serving_address: str | None = None  # None: run the model in-process (embedded mode)
    signature_name: str = "serving_default"
    model_version: int | None = None
    model_version_label: str | None = None
    default_threshold: float = 0.75
    request_timeout_s: float = 10.0
    max_body_bytes: int = 20 * MB
    max_image_pixels: int = 50_000_000
    max_image_side: int = 1024  # 0: decode at full resolution
    workers: int = 1
    threads: int = 8
    log_level: str = "info"
    api_key: str | None = None  # when set, /classify needs it (Authorization: Bearer KEY or X-API-Key: KEY)
    models: tuple[ModelConfig, ...] = ()  # MODELS; empty: the one model of MODEL_NAME, MODEL_BASE_PATH, LABEL_MAP

    @property
    def label_map_path(self) -> Path:
        """The label map file: LABEL_MAP, else MODEL_DIR/label_map.pbtxt."""
        return self.label_map if self.label_map is not None else self.model_dir / "label_map.pbtxt"

    @property
    def model_configs(self) -> tuple[ModelConfig, ...]:
        """Every model served, the default (first) one first."""
        if self.models:
            return self.models
        return (ModelConfig(self.model_name, self.model_base_path, self.label_map_path),)

    @property
    def embedded(self) -> bool:
        """True when the model runs in this process rather than in TensorFlow Serving."""
        return not self.serving_address

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, raising ``ConfigError`` naming the first bad one."""
        env = os.environ if env is None else env
        reader = _EnvReader(env)
        serving_address = reader.text("SERVING_ADDRESS")
        version = reader.optional_int("MODEL_VERSION", minimum=1)
        label = reader.text("MODEL_VERSION_LABEL")
        if version is not None and label is not None:
            raise ConfigError("set MODEL_VERSION or MODEL_VERSION_LABEL, not both")
        # Each embedded worker holds its own TensorFlow runtime and model, so one worker with threads is the
        # default there; a gRPC proxy is I/O bound and gains from a worker per core.
        default_workers = 1 if not serving_address else max(2, _cpu_count())
        label_map = reader.text("LABEL_MAP")
        models = _parse_models(reader.text("MODELS"))
        if models and (version is not None or label is not None):
            raise ConfigError(
                "MODEL_VERSION and MODEL_VERSION_LABEL pin the single model; they cannot be used with MODELS"
            )
        settings = cls(
            port=reader.integer("PORT", 8000, minimum=1, maximum=65535),
            host=reader.text("HOST") or cls.host,
            model_dir=Path(reader.text("MODEL_DIR") or "static"),
            model_base_path=Path(reader.text("MODEL_BASE_PATH") or "models/detector"),
            model_name=reader.text("MODEL_NAME") or "detector",
            label_map=Path(label_map) if label_map else None,
            serving_address=serving_address,
            signature_name=reader.text("SIGNATURE_NAME") or "serving_default",
            model_version=version,
            model_version_label=label,
            default_threshold=reader.fraction("DEFAULT_THRESHOLD", 0.75),
            request_timeout_s=reader.positive_float("REQUEST_TIMEOUT_S", 10.0),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", 20 * MB, minimum=1),
            max_image_pixels=reader.integer("MAX_IMAGE_PIXELS", 50_000_000, minimum=1),
            max_image_side=reader.integer("MAX_IMAGE_SIDE", 1024, minimum=0),
            workers=reader.integer("WEB_CONCURRENCY", default_workers, minimum=1, maximum=64),
            threads=reader.integer("GUNICORN_THREADS", 8, minimum=1, maximum=256),
            log_level=(reader.text("LOG_LEVEL") or "info").lower(),
            api_key=reader.text("API_KEY"),
            models=models,
        )
        return settings


def _parse_models(raw: str | None) -> tuple[ModelConfig, ...]:
    """``MODELS=name:label_map[:base_path],...``; the base path defaults to ``models/<name>``."""
    if raw is None:
        return ()
    models: list[ModelConfig] = []
    for entry in raw.split(","):
        parts = [part.strip() for part in entry.strip().split(":")]
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"MODELS entries are name:label_map[:base_path], got {entry.strip()!r}")
        name, label_map = parts[0], Path(parts[1])
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ConfigError(f"MODELS: model name {name!r} may only hold letters, digits, '-', '_' and '.'")
        if any(model.name == name for model in models):
            raise ConfigError(f"MODELS names {name!r} twice")
        base_path = Path(parts[2]) if len(parts) == 3 else Path("models") / name
        models.append(ModelConfig(name=name, base_path=base_path, label_map=label_map))
    return tuple(models)


class _EnvReader:
    """Reads and validates single variables; every failure names the variable and the value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
        return value

    def optional_int(self, name: str, *, minimum: int) -> int | None:
        if self.text(name) is None:
            return None
        return self.integer(name, 0, minimum=minimum)

    def _float(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be finite, got {raw!r}")
        return value

    def fraction(self, name: str, default: float) -> float:
        value = self._float(name, default)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        return value

    def positive_float(self, name: str, default: float) -> float:
        value = self._float(name, default)
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
        return value

"""Typed settings, read once from the environment (``Settings.from_env``); everything else takes them as given."""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from odapi.contract import InputType
from odapi.layout import LABEL_MAP_FILE
from proxy import params
from proxy.errors import ConfigError, InvalidParameter

MB = 1024 * 1024


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelConfig:
    """One model the proxy serves: its name in TF Serving, its versions on disk (embedded mode), and the label map
    used for versions that carry none of their own (None: such versions answer ``Class N``)."""

    name: str
    base_path: Path
    label_map: Path | None = None


# The options a preset may name, in query-string form, and how each is checked (the same parsers a request's go
# through). A preset's threshold is the base threshold on every route (min_confidence on the DeepStack routes).
PRESET_OPTIONS: Mapping[str, Callable[[str], object]] = {
    "threshold": lambda raw: params.parse_threshold(raw, 0.0),
    "thresholds": params.parse_class_thresholds,
    "classes": params.parse_classes,
    "iou_threshold": lambda raw: params.parse_fraction("iou_threshold", raw, None),
    "max_detections": lambda raw: params.parse_count("max_detections", raw),
    "tile": params.parse_tile,
    "roi": params.parse_roi,
}


@dataclass(frozen=True)
class Preset:
    """A name for a served model with options (``PRESETS``): the options it names win over a request's."""

    name: str
    model: str
    options: tuple[tuple[str, str], ...]

    @property
    def query(self) -> str:
        """The options in query-string form, as written."""
        return "&".join(f"{key}={value}" for key, value in self.options)


@dataclass(frozen=True)
class FrontLimits:
    """The HTTP front's bounds on connections (``proxy.front``), derived from ``Settings.front``."""

    header_timeout_s: float  # the request line and headers must arrive within
    read_timeout_s: float  # the body must have arrived this long after the headers
    min_rate_bytes: int  # a body arriving slower (after a grace period) is a 408
    keepalive_timeout_s: float  # an idle keep-alive connection is closed after
    send_timeout_s: float  # a client that does not read its answer for this long is dropped
    max_connections: int  # per process; past it a new connection gets a fast 503
    max_buffered_bytes: int  # request bodies held per process at once, all connections
    max_body_bytes: int


@dataclass(frozen=True)
class Settings:
    """Everything the proxy can be configured with."""

    port: int = 8000
    host: str = "0.0.0.0"  # noqa: S104  (a server in a container must listen beyond loopback)
    model_dir: Path = Path("static")
    model_base_path: Path = Path("models/detector")
    model_name: str = "detector"
    label_map: Path | None = None  # None: MODEL_DIR/label_map.pbtxt when it exists
    serving_address: str | None = None  # None: run the model in-process (embedded mode)
    signature_name: str = "serving_default"
    model_version: int | None = None
    model_version_label: str | None = None
    input_type: InputType | None = None  # None: as the model says (it is detected; users never need this)
    default_threshold: float = 0.75
    request_timeout_s: float = 10.0
    max_body_bytes: int = 20 * MB
    max_image_pixels: int = 50_000_000
    max_image_side: int = 1024  # 0: decode at full resolution
    max_image_aspect: float = 50.0
    decode_memory_bytes: int = 512 * MB
    max_batch_images: int = 16
    max_backend_calls: int = 32  # per process; one request takes at most max_backend_calls // threads of them
    max_tiles: int = 64  # tiles per request (tile=N), all images of a JSON batch together
    frame_cache_s: float = 5.0  # how long a frame's model output answers the same bytes again (0: no cache)
    frame_cache_entries: int = 64
    # Where the worker processes of one server share the frame cache: a private directory `python -m proxy` makes
    # before it forks them (None: each Services makes one of its own).
    frame_cache_dir: Path | None = None
    max_form_parts: int = 32
    # A cap on /v1/vision/* answers (None: none): Frigate writes predictions into 20 rows and fails on a 21st, and
    # with 80 classes a busy frame can hold more; a request's own max_detections wins.
    vision_max_detections: int | None = 20
    model_load_retries: int = 5  # tries after a failed load, as TF Serving's --max_num_load_retries
    model_load_retry_s: float = 2.0  # the wait before the first retry; it doubles for each next one
    workers: int = 1
    threads: int = 8
    log_level: str = "info"
    log_format: str = "auto"  # json, text, or auto: text on a terminal, JSON otherwise
    api_key: str | None = None  # when set, /classify needs it (Authorization: Bearer KEY or X-API-Key: KEY)
    models: tuple[ModelConfig, ...] = ()  # MODELS; empty: the one model of MODEL_NAME, MODEL_BASE_PATH, LABEL_MAP
    presets: tuple[Preset, ...] = ()  # PRESETS
    # The HTTP front's bounds (proxy.front), handed to it as ``front``.
    header_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    min_rate_bytes: int = 1024
    keepalive_timeout_s: float = 15.0
    send_timeout_s: float = 30.0
    max_connections: int = 1000
    max_buffered_bytes: int = 256 * MB

    def __post_init__(self) -> None:
        _check_presets(self.presets, [model.name for model in self.model_configs])

    def preset(self, name: str | None) -> Preset | None:
        """The preset called ``name``, if there is one."""
        return next((preset for preset in self.presets if preset.name == name), None)

    @property
    def calls_per_request(self) -> int:
        """The model calls one request may have in flight: its fair share of MAX_BACKEND_CALLS over the threads
        that run requests, so that a tiled frame never takes every slot from the other clients."""
        return max(1, self.max_backend_calls // self.threads)

    @property
    def front(self) -> FrontLimits:
        """The HTTP front's bounds."""
        return FrontLimits(
            header_timeout_s=self.header_timeout_s,
            read_timeout_s=self.read_timeout_s,
            min_rate_bytes=self.min_rate_bytes,
            keepalive_timeout_s=self.keepalive_timeout_s,
            send_timeout_s=self.send_timeout_s,
            max_connections=self.max_connections,
            max_buffered_bytes=self.max_buffered_bytes,
            max_body_bytes=self.max_body_bytes,
        )

    @property
    def label_map_path(self) -> Path | None:
        """The fallback label map: LABEL_MAP, else MODEL_DIR/label_map.pbtxt when there is one."""
        if self.label_map is not None:
            return self.label_map
        beside = self.model_dir / LABEL_MAP_FILE
        return beside if beside.is_file() else None

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
        d = cls()  # the defaults: they live in the fields above, nowhere else
        serving_address = reader.text("SERVING_ADDRESS")
        version = reader.optional_int("MODEL_VERSION", minimum=1)
        label = reader.text("MODEL_VERSION_LABEL")
        if version is not None and label is not None:
            raise ConfigError("set MODEL_VERSION or MODEL_VERSION_LABEL, not both")
        # Each embedded worker holds its own TensorFlow runtime and model, so one worker with threads is the
        # default there; a gRPC proxy is I/O bound and gains from a worker per core.
        default_workers = d.workers if not serving_address else max(2, _cpu_count())
        label_map = reader.text("LABEL_MAP")
        models = _parse_models(reader.text("MODELS"))
        if models and (version is not None or label is not None):
            raise ConfigError(
                "MODEL_VERSION and MODEL_VERSION_LABEL pin the single model; they cannot be used with MODELS"
            )
        return cls(
            port=reader.integer("PORT", d.port, minimum=1, maximum=65535),
            host=reader.text("HOST") or d.host,
            model_dir=Path(reader.text("MODEL_DIR") or d.model_dir),
            model_base_path=Path(reader.text("MODEL_BASE_PATH") or d.model_base_path),
            model_name=reader.text("MODEL_NAME") or d.model_name,
            label_map=Path(label_map) if label_map else None,
            serving_address=serving_address,
            signature_name=reader.text("SIGNATURE_NAME") or d.signature_name,
            model_version=version,
            model_version_label=label,
            input_type=_input_type(reader.choice("INPUT_TYPE", tuple(InputType))),
            default_threshold=reader.fraction("DEFAULT_THRESHOLD", d.default_threshold),
            request_timeout_s=reader.positive_float("REQUEST_TIMEOUT_S", d.request_timeout_s),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", d.max_body_bytes, minimum=1),
            max_image_pixels=reader.integer("MAX_IMAGE_PIXELS", d.max_image_pixels, minimum=1),
            max_image_side=reader.integer("MAX_IMAGE_SIDE", d.max_image_side, minimum=0),
            max_image_aspect=reader.positive_float("MAX_IMAGE_ASPECT", d.max_image_aspect),
            decode_memory_bytes=reader.integer("DECODE_MEMORY_MB", d.decode_memory_bytes // MB, minimum=16) * MB,
            max_batch_images=reader.integer("MAX_BATCH_IMAGES", d.max_batch_images, minimum=1, maximum=256),
            max_backend_calls=reader.integer("MAX_BACKEND_CALLS", d.max_backend_calls, minimum=1, maximum=1024),
            max_form_parts=reader.integer("MAX_FORM_PARTS", d.max_form_parts, minimum=1, maximum=1000),
            max_tiles=reader.integer("MAX_TILES", d.max_tiles, minimum=1, maximum=4096),
            frame_cache_s=reader.non_negative_float("FRAME_CACHE_S", d.frame_cache_s),
            frame_cache_entries=reader.integer("FRAME_CACHE_ENTRIES", d.frame_cache_entries, minimum=1, maximum=10_000),
            vision_max_detections=reader.integer("VISION_MAX_DETECTIONS", d.vision_max_detections or 0, minimum=0)
            or None,  # 0: no cap
            model_load_retries=reader.integer("MODEL_LOAD_RETRIES", d.model_load_retries, minimum=0, maximum=100),
            model_load_retry_s=reader.positive_float("MODEL_LOAD_RETRY_S", d.model_load_retry_s),
            workers=reader.integer("WEB_CONCURRENCY", default_workers, minimum=1, maximum=64),
            threads=reader.integer("GUNICORN_THREADS", d.threads, minimum=1, maximum=256),
            log_level=(reader.text("LOG_LEVEL") or d.log_level).lower(),
            log_format=reader.choice("LOG_FORMAT", ("auto", "json", "text")) or d.log_format,
            api_key=reader.text("API_KEY"),
            models=models,
            presets=_parse_presets(reader.text("PRESETS")),
            header_timeout_s=reader.positive_float("REQUEST_HEADER_TIMEOUT_S", d.header_timeout_s),
            read_timeout_s=reader.positive_float("REQUEST_READ_TIMEOUT_S", d.read_timeout_s),
            min_rate_bytes=reader.integer("REQUEST_MIN_RATE_BYTES", d.min_rate_bytes, minimum=0),
            keepalive_timeout_s=reader.positive_float("KEEPALIVE_TIMEOUT_S", d.keepalive_timeout_s),
            send_timeout_s=reader.positive_float("SEND_TIMEOUT_S", d.send_timeout_s),
            max_connections=reader.integer("MAX_CONNECTIONS", d.max_connections, minimum=1, maximum=100_000),
            max_buffered_bytes=reader.integer("MAX_BUFFERED_MB", d.max_buffered_bytes // MB, minimum=1) * MB,
        )


def _input_type(raw: str | None) -> InputType | None:
    return InputType(raw) if raw is not None else None


def _parse_models(raw: str | None) -> tuple[ModelConfig, ...]:
    """``MODELS=name[:label_map[:base_path]],...``; the base path defaults to ``models/<name>``."""
    if raw is None:
        return ()
    models: list[ModelConfig] = []
    for entry in raw.split(","):
        parts = [part.strip() for part in entry.strip().split(":")]
        if not 1 <= len(parts) <= 3 or not parts[0] or (len(parts) == 3 and not parts[2]):
            raise ConfigError(f"MODELS entries are name[:label_map[:base_path]], got {entry.strip()!r}")
        name = parts[0]
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ConfigError(f"MODELS: model name {name!r} may only hold letters, digits, '-', '_' and '.'")
        if any(model.name == name for model in models):
            raise ConfigError(f"MODELS names {name!r} twice")
        label_map = Path(parts[1]) if len(parts) > 1 and parts[1] else None
        base_path = Path(parts[2]) if len(parts) == 3 else Path("models") / name
        models.append(ModelConfig(name=name, base_path=base_path, label_map=label_map))
    return tuple(models)


def _parse_presets(raw: str | None) -> tuple[Preset, ...]:
    """``PRESETS=name=model?option=value&option=value; name=model?...``: a query string after each model, as a URL
    has one, so options may hold commas and colons; presets are separated by semicolons (or new lines)."""
    if raw is None:
        return ()
    presets = []
    for entry in (part.strip() for part in raw.replace("\n", ";").split(";")):
        if not entry:
            continue
        name, equals, rest = entry.partition("=")
        model, _, query = rest.partition("?")
        name, model = name.strip(), model.strip()
        if not equals or not name or not model:
            raise ConfigError(f"PRESETS entries are name=model?option=value&..., got {entry!r}")
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ConfigError(f"PRESETS: preset name {name!r} may only hold letters, digits, '-', '_' and '.'")
        presets.append(Preset(name, model, _preset_options(name, query)))
    return tuple(presets)


def _preset_options(name: str, query: str) -> tuple[tuple[str, str], ...]:
    """A preset's options, each checked by the parser a request's goes through."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"PRESETS: preset {name!r} has a malformed option string {query!r}") from None
    seen: dict[str, str] = {}
    for key, value in pairs:
        check = PRESET_OPTIONS.get(key)
        if check is None:
            raise ConfigError(f"PRESETS: preset {name!r} names {key!r}; its options may be {', '.join(PRESET_OPTIONS)}")
        if key in seen:
            raise ConfigError(f"PRESETS: preset {name!r} names {key!r} twice")
        try:
            check(value)
        except InvalidParameter as exc:
            raise ConfigError(f"PRESETS: preset {name!r}: {exc.message}") from None
        seen[key] = value
    return tuple(seen.items())


def _check_presets(presets: tuple[Preset, ...], models: list[str]) -> None:
    names: set[str] = set()
    for preset in presets:
        if preset.name in models:
            raise ConfigError(f"PRESETS: preset {preset.name!r} has the name of a model; give it another")
        if preset.name in names:
            raise ConfigError(f"PRESETS names {preset.name!r} twice")
        if preset.model not in models:
            raise ConfigError(
                f"PRESETS: preset {preset.name!r} names model {preset.model!r}; this server has: {', '.join(models)}"
            )
        names.add(preset.name)


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

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is not None and raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

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

    def non_negative_float(self, name: str, default: float) -> float:
        value = self._float(name, default)
        if value < 0:
            raise ConfigError(f"{name} must be 0 or more, got {value}")
        return value

    def positive_float(self, name: str, default: float) -> float:
        value = self._float(name, default)
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
        return value

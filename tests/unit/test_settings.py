"""Settings read once from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.settings import Settings


def test_defaults() -> None:
    """With an empty environment every documented default applies, and the model runs embedded."""
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.model_dir == Path("static")
    assert settings.model_base_path == Path("models/detector")
    assert settings.model_name == "detector"
    assert settings.serving_address is None
    assert settings.embedded
    assert settings.default_threshold == 0.75
    assert settings.request_timeout_s == 10.0
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.max_image_pixels == 50_000_000
    assert settings.workers == 1
    assert settings.max_batch_images == 16
    assert settings.vision_max_detections == 20
    assert settings.input_type is None
    assert settings.log_format == "auto"
    assert settings.front.max_connections == 1000
    assert settings.front.header_timeout_s == 10.0


def test_values_from_the_environment() -> None:
    """Each variable lands in its typed field; LABEL_MAP overrides MODEL_DIR's."""
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "MODEL_DIR": "/m",
            "LABEL_MAP": "/labels/coco.pbtxt",
            "SERVING_ADDRESS": "dns:///serving:8500",
            "DEFAULT_THRESHOLD": "0.5",
            "REQUEST_TIMEOUT_S": "2.5",
            "MODEL_VERSION": "3",
        }
    )
    assert settings.port == 9000
    assert settings.label_map_path == Path("/labels/coco.pbtxt")
    assert not settings.embedded
    assert settings.default_threshold == 0.5
    assert settings.request_timeout_s == 2.5
    assert settings.model_version == 3
    assert settings.workers >= 2


def test_fallback_label_map_is_model_dirs_when_it_exists(tmp_path: Path) -> None:
    """Without LABEL_MAP, the fallback label map is MODEL_DIR/label_map.pbtxt if there is one, else none."""
    assert Settings.from_env({"MODEL_DIR": str(tmp_path)}).label_map_path is None
    (tmp_path / "label_map.pbtxt").write_text('item { id: 1 name: "x" }')
    assert Settings.from_env({"MODEL_DIR": str(tmp_path)}).label_map_path == tmp_path / "label_map.pbtxt"


def test_front_and_round_settings() -> None:
    """The HTTP front's bounds and this round's limits come from their variables."""
    settings = Settings.from_env(
        {
            "REQUEST_HEADER_TIMEOUT_S": "3",
            "REQUEST_MIN_RATE_BYTES": "0",
            "MAX_CONNECTIONS": "50",
            "MAX_BUFFERED_MB": "8",
            "MAX_BODY_BYTES": "1000",
            "MAX_BATCH_IMAGES": "4",
            "VISION_MAX_DETECTIONS": "0",
            "INPUT_TYPE": "tf_example",
            "DECODE_MEMORY_MB": "64",
            "LOG_FORMAT": "text",
        }
    )
    assert (settings.front.header_timeout_s, settings.front.min_rate_bytes) == (3.0, 0)
    assert (settings.front.max_connections, settings.front.max_buffered_bytes) == (50, 8 * 1024 * 1024)
    assert settings.front.max_body_bytes == settings.max_body_bytes == 1000
    assert (settings.max_batch_images, settings.vision_max_detections) == (4, None)  # 0: no cap
    assert settings.input_type == "tf_example" and settings.decode_memory_bytes == 64 * 1024 * 1024
    assert settings.log_format == "text"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
        ({"DEFAULT_THRESHOLD": "2"}, "DEFAULT_THRESHOLD must be between 0 and 1"),
        ({"DEFAULT_THRESHOLD": "nan"}, "DEFAULT_THRESHOLD must be finite"),
        ({"REQUEST_TIMEOUT_S": "0"}, "REQUEST_TIMEOUT_S must be positive"),
        ({"MODEL_VERSION": "0"}, "MODEL_VERSION must be at least 1"),
        ({"MODEL_VERSION": "2", "MODEL_VERSION_LABEL": "stable"}, "not both"),
        ({"INPUT_TYPE": "jpeg"}, "INPUT_TYPE must be one of image_tensor"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of auto, json, text"),
        ({"VISION_MAX_DETECTIONS": "-1"}, "VISION_MAX_DETECTIONS must be at least 0"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    """A bad value is a ``ConfigError`` naming the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_models_list() -> None:
    """MODELS lists name[:label_map[:base_path]] entries, the default first; base paths default to models/NAME."""
    settings = Settings.from_env({"MODELS": "detector, cars:static/label_map.pbtxt, faces::/m/faces"})
    assert [(m.name, m.label_map, m.base_path) for m in settings.model_configs] == [
        ("detector", None, Path("models/detector")),
        ("cars", Path("static/label_map.pbtxt"), Path("models/cars")),
        ("faces", None, Path("/m/faces")),
    ]


def test_single_model_without_models() -> None:
    """Without MODELS, the one model comes from MODEL_NAME, MODEL_BASE_PATH and LABEL_MAP."""
    settings = Settings.from_env({"MODEL_NAME": "cars", "MODEL_BASE_PATH": "/m/cars", "LABEL_MAP": "/l/cars.pbtxt"})
    assert [(m.name, m.base_path, m.label_map) for m in settings.model_configs] == [
        ("cars", Path("/m/cars"), Path("/l/cars.pbtxt"))
    ]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("a:b:c:d", "MODELS entries are name"),
        (":x.pbtxt", "MODELS entries are name"),
        ("a:x.pbtxt:", "MODELS entries are name"),
        ("a:x.pbtxt,a:y.pbtxt", "MODELS names 'a' twice"),
        ("bad name:x.pbtxt", "may only hold letters"),
    ],
)
def test_bad_models(models: str, message: str) -> None:
    """A malformed MODELS is a ``ConfigError`` saying what an entry looks like."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"MODELS": models})


def test_version_pins_need_a_single_model() -> None:
    """MODEL_VERSION cannot be combined with MODELS."""
    with pytest.raises(ConfigError, match="cannot be used with MODELS"):
        Settings.from_env({"MODELS": "a:x.pbtxt", "MODEL_VERSION": "2"})

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
    assert settings.label_map_path == Path("static/label_map.pbtxt")
    assert settings.serving_address is None
    assert settings.embedded
    assert settings.default_threshold == 0.75
    assert settings.request_timeout_s == 10.0
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.max_image_pixels == 50_000_000
    assert settings.workers == 1


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


def test_model_dir_moves_the_default_label_map() -> None:
    """Without LABEL_MAP, the label map is MODEL_DIR/label_map.pbtxt."""
    assert Settings.from_env({"MODEL_DIR": "/x"}).label_map_path == Path("/x/label_map.pbtxt")


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
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    """A bad value is a ``ConfigError`` naming the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)

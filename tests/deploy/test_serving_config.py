"""serving_config/: TF Serving's model, batching and monitoring configs, parsed with TF Serving's own messages."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.deploy.deployfiles import SERVING_CONFIG, parse_text, tf_serving_config_messages


def test_models_config_parses_as_model_server_config() -> None:
    """models.config is a ModelServerConfig serving `detector` from /models/detector, latest version only."""
    config = parse_text(SERVING_CONFIG / "models.config", model_server_config_pb2.ModelServerConfig)
    models = config.model_config_list.config
    assert [m.name for m in models] == ["detector"]
    detector = models[0]
    assert detector.base_path == "/models/detector"
    assert detector.model_platform == "tensorflow"
    assert detector.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert detector.model_version_policy.latest.num_versions == 1


def test_batching_parameters_parse_and_keep_padding_off() -> None:
    """batching_parameters.txt is a BatchingParameters with padding off and bounded threads and queue."""
    params = parse_text(SERVING_CONFIG / "batching_parameters.txt", tf_serving_config_messages()["BatchingParameters"])
    assert params.pad_variable_length_inputs is False
    assert params.HasField("max_batch_size") and params.max_batch_size.value >= 1
    assert params.HasField("num_batch_threads") and 1 <= params.num_batch_threads.value <= 4
    assert params.HasField("max_enqueued_batches") and params.max_enqueued_batches.value >= 1
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value >= 0
    # Images of different sizes in one batch fail the whole batch unless padded, so a batch larger than one
    # request needs every request to share a shape; this configuration does not assume that.
    assert params.max_batch_size.value == 1


def test_monitoring_config_enables_prometheus_path() -> None:
    """monitoring.config is a MonitoringConfig exposing Prometheus at /monitoring/prometheus/metrics."""
    config = parse_text(SERVING_CONFIG / "monitoring.config", tf_serving_config_messages()["MonitoringConfig"])
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("BatchingParameters", "max_batch_sise { value: 1 }"),
        ("BatchingParameters", "max_batch_size: 1"),
        ("MonitoringConfig", "prometheus_config { enabled: true }"),
    ],
)
def test_serving_config_parser_rejects_mistakes(message: str, text: str) -> None:
    """A misspelt field or a bare value where TF Serving expects a wrapper message fails to parse."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, tf_serving_config_messages()[message]())

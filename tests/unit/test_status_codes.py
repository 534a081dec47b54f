"""gRPC / TensorFlow status codes → HTTP, as TF Serving's REST server maps them (http_server.cc)."""

from __future__ import annotations

import grpc
import pytest

from odapi.contract import InputType
from proxy.backends import CallLimit, LabelMaps
from proxy.backends.serving import ModelSpec, ServingBackend, _Signature
from proxy.errors import InvalidImage
from proxy.status_codes import error_for_code


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 502),  # TF Serving says 500; upstream failures are a gateway's 502 here
        (grpc.StatusCode.UNKNOWN, 502),
        (grpc.StatusCode.PERMISSION_DENIED, 502),
    ],
)
def test_table(code: grpc.StatusCode, status: int) -> None:
    """Each gRPC code maps to TF Serving's HTTP status, failures it would answer 500 to 502."""
    assert error_for_code(code.value[0], "m").status == status


class _Failure(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """An RpcError as a gRPC call raises it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None: ...
    def trailing_metadata(self) -> None: ...
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None: ...
    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def _backend() -> ServingBackend:
    return ServingBackend(ModelSpec("m"), None, calls=CallLimit(1), labels=LabelMaps(None), request_timeout_s=5)  # type: ignore[arg-type]


def test_an_encoded_models_decoder_refusing_bytes_is_a_400_invalid_image() -> None:
    """INVALID_ARGUMENT from a model that decodes images itself means these bytes are not an image it reads."""
    signature = _Signature(1, "inputs", InputType.ENCODED_IMAGE_STRING_TENSOR, 1, (), None)
    error = _backend()._failed(_Failure(grpc.StatusCode.INVALID_ARGUMENT, "Unknown image file format"), signature)
    assert isinstance(error, InvalidImage) and "decoder cannot read" in error.message


def test_a_signature_mismatch_stays_a_signature_error() -> None:
    """INVALID_ARGUMENT about the signature is not blamed on the image."""
    signature = _Signature(1, "inputs", InputType.TF_EXAMPLE, 1, (), None)
    error = _backend()._failed(
        _Failure(grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"), signature
    )
    assert not isinstance(error, InvalidImage) and error.status == 400


def test_the_proxys_own_deadline_and_tf_servings_deadline_exceeded_are_told_apart() -> None:
    """The call's own deadline passing names REQUEST_TIMEOUT_S; a DEADLINE_EXCEEDED TF Serving answers itself (a
    session's run timeout, say) keeps TF Serving's words instead of blaming the proxy's timeout. Both are 504."""
    local = _backend()._describe(_Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "Predict")
    assert local.status == 504 and "within 5s (REQUEST_TIMEOUT_S)" in local.message
    served = _backend()._describe(
        _Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification"), "Predict"
    )
    assert served.status == 504 and "Timed out waiting for notification" in served.message
    assert "REQUEST_TIMEOUT_S" not in served.message

"""gRPC / TensorFlow status codes → the proxy's errors, as TF Serving's REST server maps them (http_server.cc).

TensorFlow's error codes are gRPC's, so the embedded backend and the gRPC backend share this one table.
"""

from __future__ import annotations

from proxy.errors import (
    BackendError,
    BackendTimeout,
    BadRequest,
    ModelNotReady,
    NotFound,
    NotImplementedByBackend,
    ProxyError,
    TooManyRequests,
)

# Numeric codes from google/rpc/code.proto; identical in grpc.StatusCode and tf.errors.
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
FAILED_PRECONDITION = 9
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
UNAVAILABLE = 14

_ERROR_FOR_CODE: dict[int, type[ProxyError]] = {
    INVALID_ARGUMENT: BadRequest,
    FAILED_PRECONDITION: BadRequest,
    NOT_FOUND: NotFound,
    RESOURCE_EXHAUSTED: TooManyRequests,
    UNIMPLEMENTED: NotImplementedByBackend,
    UNAVAILABLE: ModelNotReady,
    DEADLINE_EXCEEDED: BackendTimeout,
}


def error_for_code(code: int, message: str) -> ProxyError:
    """The proxy error for a backend status code; codes the table lacks are the backend's fault (502)."""
    error_class = _ERROR_FOR_CODE.get(code, BackendError)
    return error_class(message)

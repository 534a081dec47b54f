"""The proxy's one error hierarchy: each class carries the HTTP status it is answered with.

    ProxyError                      500  something went wrong on our side
    ├── BadRequest                  400  the request cannot be understood
    │   ├── InvalidParameter        400  a query parameter is malformed or out of range
    │   └── InvalidImage            400  the body is not an image we can decode
    ├── Unauthorized                401  API key missing or wrong
    ├── NotFound                    404  unknown path, or the model the backend was asked for
    ├── MethodNotAllowed            405  (rendered from werkzeug's own exception, with Allow)
    ├── PayloadTooLarge             413  body or decoded image over the configured limits
    ├── UnsupportedMediaType        415  a declared non-image Content-Type whose bytes are not an image
    ├── TooManyRequests             429  the backend is out of capacity
    ├── BackendError                502  the backend answered something we cannot use
    ├── NotImplementedByBackend     501  the backend does not implement the call
    ├── ModelNotReady               503  no model loaded yet, or the backend is unreachable (Retry-After)
    └── BackendTimeout              504  the backend did not answer within REQUEST_TIMEOUT_S

One Flask error handler (``proxy.app``) renders every one of them as ``{"error": message}``.
Configuration problems found at start-up are ``ConfigError``; they stop the process, they are never answered.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration found at start-up (a bad environment variable, a malformed label map)."""


class ProxyError(Exception):
    """Base of every error answered to a client; ``status`` is the HTTP status code."""

    status: int = 500
    headers: dict[str, str] = {}  # noqa: RUF012  (read-only class default; instances override by assignment)

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if headers is not None:
            self.headers = headers


class BadRequest(ProxyError):
    """The request cannot be understood."""

    status = 400


class InvalidParameter(BadRequest):
    """A query or form parameter is malformed or out of range."""


class InvalidImage(BadRequest):
    """The body is not an image that can be decoded."""


class Unauthorized(ProxyError):
    """API key missing or wrong."""

    status = 401


class NotFound(ProxyError):
    """The path, or the model asked of the backend, does not exist."""

    status = 404


class PayloadTooLarge(ProxyError):
    """The body or the decoded image is over the configured limits."""

    status = 413


class UnsupportedMediaType(ProxyError):
    """The declared Content-Type is not an image and the bytes do not decode as one."""

    status = 415


class TooManyRequests(ProxyError):
    """The backend is out of capacity."""

    status = 429


class NotImplementedByBackend(ProxyError):
    """The backend does not implement the call."""

    status = 501


class BackendError(ProxyError):
    """The backend failed, or answered with something the proxy cannot use."""

    status = 502


class ModelNotReady(ProxyError):
    """No model is loaded yet, or the backend cannot be reached; clients should retry."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class BackendTimeout(ProxyError):
    """The backend did not answer within the deadline."""

    status = 504

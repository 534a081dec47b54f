"""The proxy's one error hierarchy: each class carries the HTTP status it is answered with.

    ProxyError                      500  something went wrong on our side
    ├── Misconfigured               500  the server's configuration is at fault (a preset naming an unknown class)
    ├── BadRequest                  400  the request cannot be understood
    │   ├── InvalidParameter        400  a query, form or JSON parameter is malformed or out of range
    │   └── InvalidImage            400  the bytes are not an image we (or the model's own decoder) can decode
    ├── Unauthorized                401  API key missing or wrong
    ├── NotFound                    404  unknown path or model, or a model version the backend lacks
    ├── RequestTimeout              408  the request did not arrive in time (raised by the HTTP front)
    ├── PayloadTooLarge             413  body, image, batch or multipart part count over its limit
    ├── RequestLineTooLong          414  the request line is over the front's limit
    ├── UnsupportedMediaType        415  a declared non-image Content-Type whose bytes are not an image
    ├── TooManyRequests             429  the backend is out of capacity
    ├── HeadersTooLarge             431  a header field, or all of them, over the front's limits
    ├── NotImplementedByBackend     501  the backend does not implement the call
    ├── BackendError                502  the backend answered something we cannot use
    ├── Unavailable                 503  try again later (Retry-After)
    │   ├── ModelNotReady           503  no model loaded yet, or the backend is unreachable
    │   └── Overloaded              503  this process has no room for more work right now
    └── BackendTimeout              504  the backend did not answer within REQUEST_TIMEOUT_S

The app's one error handler (``proxy.app``) renders each as the route's error shape: ``{"error": message}``, or
DeepStack's and CodeProject.AI's on the ``/v1/vision/*`` routes (``proxy.answers``). Werkzeug's own HTTP errors
(404 for an unknown path, 405 with ``Allow``) go through the same handler.
Configuration problems found at start-up are ``ConfigError``; they stop the process, they are never answered.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration found at start-up (a bad environment variable, a malformed label map)."""


class ProxyError(Exception):
    """Base of every error answered to a client; ``status`` is the HTTP status code, ``message`` one line."""

    status: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        # Backends' messages (TensorFlow's especially) run over several lines; the first one names the problem.
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        self.message = lines[0] if lines else type(self).__name__
        super().__init__(self.message)
        self.headers: dict[str, str] = dict(headers or {})  # each error's own: nothing shared between instances


class Misconfigured(ProxyError):
    """The server's own configuration is at fault: a preset names a class its model's label map lacks."""


class BadRequest(ProxyError):
    """The request cannot be understood."""

    status = 400


class InvalidParameter(BadRequest):
    """A query, form or JSON parameter is malformed or out of range."""


class InvalidImage(BadRequest):
    """The bytes are not an image that can be decoded."""


class Unauthorized(ProxyError):
    """API key missing or wrong."""

    status = 401


class NotFound(ProxyError):
    """The path, the model, or the model version asked of the backend does not exist."""

    status = 404


class RequestTimeout(ProxyError):
    """The request's headers or body did not arrive within the server's bounds."""

    status = 408


class PayloadTooLarge(ProxyError):
    """The body, an image, a batch or a multipart body's part count is over its limit."""

    status = 413


class RequestLineTooLong(ProxyError):
    """The request line (method, path and query) is longer than the front reads."""

    status = 414


class HeadersTooLarge(ProxyError):
    """A header field, the number of fields, or the whole head is over the front's limits."""

    status = 431


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


class Unavailable(ProxyError):
    """The service cannot answer now; clients should retry after ``Retry-After`` seconds."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ModelNotReady(Unavailable):
    """No model is loaded yet, or the backend cannot be reached."""


class Overloaded(Unavailable):
    """This process is at a bound it keeps (connections, decode memory, calls in flight)."""


class BackendTimeout(ProxyError):
    """The backend did not answer within the deadline."""

    status = 504

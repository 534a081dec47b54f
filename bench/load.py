"""Load generation: clients that each hold their own connection, run in threads, bounded in count and time.

Clients: ``HttpClient`` sends one fixed request over one keep-alive HTTP/1.1 connection (http.client);
``FrigateClient`` posts a frame the way Frigate's DeepStack plugin does (a ``requests.Session``, multipart ``image``,
form ``api_key=""``); ``FloorClient`` decodes the JPEG itself and calls ``Predict`` on the TF Serving stand-in over
its own gRPC channel, with no proxy in between: the least work any client of TF Serving can do. ``Repeated`` makes
one timed request of several of another client's requests in a row.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np
import requests
from PIL import Image

from proxy._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from proxy._proto.tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc
from proxy.images import draft_size, fit_within

# The converted TF1 graph's signature (converter/): input key `inputs`, the detection outputs.
INPUT_KEY = "inputs"
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
REQUEST_TIMEOUT_S = 120.0


class RequestFailed(Exception):
    """One request did not get its answer (a non-200 status, a gRPC error, a broken connection)."""


class Client(Protocol):
    """One simulated user: its own connection, one request at a time."""

    def connect(self) -> None:
        """Open the connection before the measurement starts."""

    def request(self) -> None:
        """Send one request and wait for the whole answer; raise ``RequestFailed`` when there is none."""

    def close(self) -> None:
        """Close the connection."""


class HttpClient:
    """One fixed request (``method``, ``path``, ``body``, ``headers``) over one keep-alive HTTP/1.1 connection."""

    def __init__(
        self,
        port: int,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        self._method = method
        self._path = path
        self._body = body
        self._headers = {"Connection": "keep-alive", **(headers or {})}
        self.last_answer: bytes = b""

    def connect(self) -> None:
        """Open the TCP connection now, so the first measured request does not pay for it."""
        try:
            self._connection.connect()
        except OSError as exc:
            raise RequestFailed(f"cannot connect: {exc}") from None

    def request(self) -> None:
        """One request; a connection the server closed while idle is reopened once, as HTTP clients do."""
        for attempt in (1, 2):
            try:
                self._connection.request(self._method, self._path, body=self._body, headers=self._headers)
                response = self._connection.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._connection.close()
                if attempt == 2:
                    raise RequestFailed(f"connection lost: {exc}") from None
                continue
            except OSError as exc:
                self._connection.close()
                raise RequestFailed(f"{type(exc).__name__}: {exc}") from None
            if response.status != 200:
                raise RequestFailed(f"HTTP {response.status}: {answer[:200]!r}")
            self.last_answer = answer
            return

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


def image_client(port: int, photo: bytes, path: str = "/classify") -> HttpClient:
    """``POST path`` with the JPEG as the body (``Content-Type: image/jpeg``)."""
    return HttpClient(port, path, photo, {"Content-Type": "image/jpeg"})


def batch_body(photos: list[bytes]) -> bytes:
    """``{"images": [base64, ...]}``."""
    import base64

    return json.dumps({"images": [base64.b64encode(photo).decode("ascii") for photo in photos]}).encode()


class FrigateClient:
    """Frigate's DeepStack plugin (frigate/detectors/plugins/deepstack.py): one ``requests.Session`` per detector,
    ``session.post(url, data={"api_key": ...}, files={"image": jpeg}, timeout=api_timeout)``, the answer parsed as
    JSON. The timeout here is long, so slow answers are measured rather than cut; the report compares them with
    Frigate's default ``api_timeout`` of 0.1 s."""

    def __init__(self, port: int, frame: bytes, path: str = "/v1/vision/detection") -> None:
        self._url = f"http://127.0.0.1:{port}{path}"
        self._frame = frame
        self._session = requests.Session()

    def connect(self) -> None:
        """Open the session's keep-alive connection with one untimed request."""
        self.request()

    def request(self) -> None:
        """One frame; the answer must be a 200 with DeepStack's ``success: true``."""
        try:
            response = self._session.post(
                self._url, data={"api_key": ""}, files={"image": self._frame}, timeout=REQUEST_TIMEOUT_S
            )
            answer = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise RequestFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200 or not answer.get("success"):
            raise RequestFailed(f"HTTP {response.status_code}: {response.text[:200]!r}")

    def close(self) -> None:
        """Close the session."""
        self._session.close()


class Repeated:
    """``times`` requests of ``inner`` in a row, as one timed request (eight single requests against one batch)."""

    def __init__(self, inner: Client, times: int) -> None:
        self._inner = inner
        self._times = times

    def connect(self) -> None:
        """Connect the inner client."""
        self._inner.connect()

    def request(self) -> None:
        """``times`` requests, one after the other."""
        for _ in range(self._times):
            self._inner.request()

    def close(self) -> None:
        """Close the inner client."""
        self._inner.close()


def grpc_channel(address: str) -> grpc.Channel:
    """A channel of its own (no subchannel shared with other clients) with unlimited message sizes."""
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            # Channels with equal arguments share one connection by default; a client here is one connection.
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


class FloorClient:
    """Decode the JPEG (Pillow, ``np.asarray``) and call Predict directly, ``tensor_content`` encoding.

    ``max_side``: decode as the proxy does for a picture larger than that (``MAX_IMAGE_SIDE``): at the JPEG draft
    scale ``proxy.images.draft_size`` picks, then scaled to fit (bilinear), so the model gets the proxy's pixels.
    """

    def __init__(self, address: str, body: bytes, model_name: str, max_side: int = 0) -> None:
        self._channel = grpc_channel(address)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel).Predict
        self._body = body
        self._spec = model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
        self._max_side = max_side

    def connect(self) -> None:
        """Wait until the channel is connected, so the first measured call does not pay for it."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            raise RequestFailed("gRPC channel not ready within 30 s") from None

    def predict(self) -> dict[str, np.ndarray]:
        """One image through Predict; the detection outputs as arrays."""
        image: Image.Image = Image.open(io.BytesIO(self._body))
        draft = draft_size(image.size, self._max_side)
        if draft is not None:
            image.draft(image.mode, draft)
        if image.mode != "RGB":
            image = image.convert("RGB")
        fitted = fit_within(image.size, self._max_side)
        if fitted != image.size:
            image = image.resize(fitted, Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_UINT8,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in (1, *pixels.shape)]
            ),
            tensor_content=pixels.tobytes(),
        )
        request = predict_pb2.PredictRequest(model_spec=self._spec, output_filter=OUTPUTS)
        request.inputs[INPUT_KEY].CopyFrom(tensor)
        try:
            response = self._predict(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            raise RequestFailed(f"Predict failed: {code}") from None
        # TF Serving answers float outputs in float_val; every OD API output is float.
        return {
            name: np.asarray(proto.float_val, dtype=np.float32).reshape([d.size for d in proto.tensor_shape.dim])
            for name, proto in response.outputs.items()
        }

    def request(self) -> None:
        """One Predict, answer decoded."""
        self.predict()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


@dataclass
class Round:
    """One bounded burst of requests from ``clients`` concurrent clients, after their warm-up."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


class _RoundState:
    """What the client threads of one round share: the request tickets, the clock, the results."""

    def __init__(self, clients: int, requests: int, time_limit_s: float, stop: threading.Event) -> None:
        self.result = Round()
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(clients + 1, action=self._start_clock)
        self.started = 0.0
        self.finished: list[float] = []
        self._issued = 0
        self._requests = requests
        self._time_limit_s = time_limit_s
        self._stop = stop

    def _start_clock(self) -> None:
        self.started = time.perf_counter()

    def take_ticket(self) -> bool:
        """Whether this client may start one more timed request."""
        with self.lock:
            if self._stop.is_set() or self._issued >= self._requests:
                return False
            if time.perf_counter() - self.started >= self._time_limit_s:
                return False
            self._issued += 1
            return True

    def record(self, latency_s: float | None = None, error: str | None = None) -> None:
        """Keep one latency or one error."""
        with self.lock:
            if latency_s is not None:
                self.result.latencies_s.append(latency_s)
            if error is not None:
                self.result.errors.append(error)


def _user(state: _RoundState, make_client: Callable[[], Client], warmups: int) -> None:
    """One client thread: connect, warm up, wait for everyone, then take tickets until none are left."""
    client: Client | None = None
    try:
        client = make_client()
        client.connect()
        for _ in range(warmups):
            client.request()
    except BaseException as exc:
        state.record(error=f"warm-up: {exc}")
        state.barrier.abort()
        if client is not None:
            client.close()
        return
    try:
        state.barrier.wait()
    except threading.BrokenBarrierError:
        client.close()
        return
    try:
        while state.take_ticket():
            begin = time.perf_counter()
            try:
                client.request()
            except RequestFailed as exc:
                state.record(error=str(exc))
                continue
            state.record(latency_s=time.perf_counter() - begin)
    finally:
        with state.lock:
            state.finished.append(time.perf_counter())
        client.close()


def run_round(
    make_client: Callable[[], Client],
    *,
    clients: int,
    requests: int,
    warmup: int,
    time_limit_s: float,
    stop: threading.Event,
) -> Round:
    """Connect ``clients`` clients, run ``warmup`` requests spread over them, then ``requests`` timed ones.

    The timed phase starts for every client at once (a barrier) and stops issuing new requests after
    ``time_limit_s``; requests in flight then finish. Throughput is completed requests over the time from the start
    to the last answer.
    """
    state = _RoundState(clients, requests, time_limit_s, stop)
    threads = [
        # Warm-up requests are spread round-robin: client i runs those numbered i, i + clients, ...
        threading.Thread(
            target=_user, args=(state, make_client, len(range(i, warmup, clients))), name=f"bench-client-{i}"
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.daemon = True  # an interrupted run must not wait for a slow request
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        state.barrier.wait()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # a short join keeps the main thread responsive to Ctrl-C
    if state.finished and state.started:
        state.result.elapsed_s = max(state.finished) - state.started
    return state.result


@dataclass
class Measurement:
    """Every round of one variant of one comparison, pooled."""

    section: str
    variant: str
    clients: int
    rounds: list[Round] = field(default_factory=list)

    @property
    def latencies_s(self) -> list[float]:
        """Every successful request's latency, all rounds."""
        return [latency for one in self.rounds for latency in one.latencies_s]

    @property
    def completed(self) -> int:
        """Successful timed requests."""
        return len(self.latencies_s)

    @property
    def errors(self) -> list[str]:
        """Failures, warm-up included."""
        return [error for one in self.rounds for error in one.errors]

    def percentile_ms(self, q: float) -> float:
        """The ``q``th latency percentile in milliseconds (NaN without data)."""
        values = self.latencies_s
        return float(np.percentile(values, q)) * 1000.0 if values else float("nan")

    @property
    def throughput(self) -> float:
        """Requests per second: completed requests over measured time, all rounds."""
        elapsed = sum(one.elapsed_s for one in self.rounds)
        return self.completed / elapsed if elapsed > 0 else float("nan")

    def share_over(self, limit_s: float) -> float:
        """The fraction of successful requests slower than ``limit_s`` (NaN without data)."""
        values = self.latencies_s
        return sum(1 for v in values if v > limit_s) / len(values) if values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "section": self.section,
            "variant": self.variant,
            "clients": self.clients,
            "rounds": len(self.rounds),
            "requests": self.completed,
            "errors": len(self.errors),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "throughput_rps": self.throughput,
        }


class BlueIrisPair:
    """Blue Iris's pattern: each new frame sent twice at once, to ``/v1/vision/detection`` and to
    ``/v1/vision/custom/MODEL`` (the same model), each on its own kept-alive connection (multipart ``image``); one
    timed request is the pair, until both answers are in. Every pair sends a frame of its own (``frames`` in turn),
    so a frame cache can only help within a pair, as with the camera."""

    def __init__(self, port: int, frames: list[bytes], model: str, turn: list[int]) -> None:
        self._urls = (
            f"http://127.0.0.1:{port}/v1/vision/detection",
            f"http://127.0.0.1:{port}/v1/vision/custom/{model}",
        )
        self._frames = frames
        self._turn = turn  # shared by the pairs of a run: the next frame's index
        self._sessions = (requests.Session(), requests.Session())
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Open both connections with one untimed pair."""
        self.request()

    def _one(self, index: int, frame: bytes) -> str | None:
        try:
            response = self._sessions[index].post(self._urls[index], files={"image": frame}, timeout=REQUEST_TIMEOUT_S)
            answer = response.json()
        except (requests.RequestException, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code != 200 or not answer.get("success"):
            return f"HTTP {response.status_code}: {response.text[:200]!r}"
        return None

    def request(self) -> None:
        """One new frame to both routes at once; both must answer with ``success: true``."""
        with self._lock:
            frame = self._frames[self._turn[0] % len(self._frames)]
            self._turn[0] += 1
        failures: list[str | None] = [None, None]

        def second() -> None:
            failures[1] = self._one(1, frame)

        other = threading.Thread(target=second)
        other.start()
        failures[0] = self._one(0, frame)
        other.join()
        failed = [failure for failure in failures if failure]
        if failed:
            raise RequestFailed(failed[0])

    def close(self) -> None:
        """Close both sessions."""
        for session in self._sessions:
            session.close()

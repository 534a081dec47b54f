"""``python -m bench [--quick] [--out DIR]``: run the benchmark, print the targets, write results.md and .png."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench import photos, report, stack
from bench.load import (
    BlueIrisPair,
    Client,
    FloorClient,
    FrigateClient,
    HttpClient,
    Measurement,
    Repeated,
    RequestFailed,
    Round,
    batch_body,
    image_client,
    run_round,
)
from bench.report import Results
from bench.slow import SlowClients
from harness.processes import HttpServer, established

PACKAGE_DIR = Path(__file__).resolve().parent
THRESHOLD = 0.75  # sent explicitly, so a DEFAULT_THRESHOLD in the environment cannot make the variants differ
CLASSIFY = f"/classify?threshold={THRESHOLD}"
CAMERA_PATH = "/classify?threshold=0.5"  # the camera tests' threshold: the pasted cat scores about 0.6-0.9
BATCH = 8
ORDINARY_CLIENTS = 4  # the ordinary clients measured beside the slow ones
WAIT_PROBE = 30  # section 7: the bare gRPC client's calls whose median latency the waiting Flask app sleeps


@dataclass(frozen=True)
class Plan:
    """How many requests each measurement gets; ``quick`` keeps each to a handful."""

    rounds: int  # rounds per variant; variants alternate round by round
    latency: int  # timed requests per round, 1 client
    throughput: int  # timed requests per round, 8 clients
    cpu: int  # requests per round for the CPU-time comparison
    batches: int  # batch requests (and runs of 8 single ones) per round
    frigate: int  # frames per round
    ordinary: int  # timed requests per round of the ordinary clients beside the slow ones
    slow_connections: int
    large: int  # 4000x3000 requests (and as many 640x480 ones) per round
    overhead: int  # requests per round of each side of the CPU overhead comparison
    tiles: int  # 4000x3000 camera frames per round, whole and tiled
    pairs: int  # Blue Iris pairs per round
    cold_starts: int
    settle_s: float  # after opening the slow connections, before measuring
    time_limit_s: float  # per round: no new request starts after this
    quick: bool = False  # a smoke run: no warm-up where a request is costly

    @classmethod
    def make(cls, quick: bool) -> Plan:
        """The full plan (about 7 minutes on 2 idle cores) or the quick one (a smoke run, about 50 s)."""
        if quick:
            return cls(1, 6, 16, 6, 1, 10, 8, 40, 2, 20, 1, 2, 1, 0.3, 20.0, quick=True)
        return cls(5, 90, 150, 90, 5, 120, 150, 500, 12, 400, 3, 20, 3, 1.5, 60.0)


class Interrupted(Exception):
    """SIGTERM arrived: unwind so that every process started is stopped."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


_BEGAN = time.monotonic()


def log(line: str) -> None:
    """Progress on stderr, with the seconds since the start; the results go to stdout."""
    print(f"bench: {time.monotonic() - _BEGAN:5.1f} s  {line}", file=sys.stderr, flush=True)


Around = Callable[[Measurement], AbstractContextManager[None]]


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: how to make one client, how many run at once, what wraps each of its rounds; or a
    ``runner`` that measures a round of n requests itself (one client)."""

    name: str
    make: Callable[[], Client]
    clients: int
    around: Around | None = None
    runner: Callable[[int], Round] | None = None


class Bench:
    """Runs comparisons: variants alternate round by round (who goes first rotates), rounds pooled per variant."""

    def __init__(self, plan: Plan, stop: threading.Event) -> None:
        self.plan = plan
        self.stop = stop
        self.measurements: list[Measurement] = []

    def compare(self, section: str, variants: list[Variant], requests: int, warmup: int) -> dict[str, Measurement]:
        """Measure every variant ``plan.rounds`` times; returns the measurements by variant name."""
        found = {v.name: Measurement(section, v.name, v.clients) for v in variants}
        self.measurements += found.values()
        for index in range(self.plan.rounds):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                measurement = found[variant.name]
                wrap = variant.around(measurement) if variant.around else contextlib.nullcontext()
                with wrap:
                    result = (
                        variant.runner(requests)
                        if variant.runner
                        else run_round(
                            variant.make,
                            clients=variant.clients,
                            requests=requests,
                            warmup=warmup,
                            time_limit_s=self.plan.time_limit_s,
                            stop=self.stop,
                        )
                    )
                    measurement.rounds.append(result)  # inside: what wraps the round may read it
                rate = len(result.latencies_s) / result.elapsed_s if result.elapsed_s else float("nan")
                log(
                    f"{section} | {variant.name} x{variant.clients} round {index + 1}/{self.plan.rounds}: "
                    f"{len(result.latencies_s)} ok, {len(result.errors)} errors, {rate:.1f} req/s"
                )
        return found

    def warm(self, make: Callable[[], Client], requests: int) -> None:
        """Untimed requests, nothing recorded."""
        run_round(make, clients=1, requests=0, warmup=requests, time_limit_s=60, stop=self.stop)


def _start_all(servers: Mapping[str, Callable[[], object]]) -> None:
    """Start every server at once (each polls until ready in its own thread); raise the first failure."""
    failures: dict[str, BaseException] = {}

    def target(name: str, start: Callable[[], object]) -> None:
        try:
            start()
        except BaseException as exc:
            failures[name] = exc

    threads = [threading.Thread(target=target, args=item, daemon=True) for item in servers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # a short join keeps Ctrl-C responsive
    if failures:
        name, exc = next(iter(failures.items()))
        raise stack.StackError(f"{name} did not start: {exc}")


def _cpu_meter(pids: Callable[[], list[int]], sink: Callable[[float, Measurement], None]) -> Around:
    """Gives ``sink`` the CPU seconds ``pids`` used during each round, with the measurement (its last round done)."""

    @contextlib.contextmanager
    def around(measurement: Measurement) -> Iterator[None]:
        before = stack.cpu_s(pids())
        yield
        sink(stack.cpu_s(pids()) - before, measurement)

    return around


def _summed(into: dict[str, float], key: str) -> Callable[[float, Measurement], None]:
    """A ``_cpu_meter`` sink adding each round's CPU seconds to ``into[key]``."""

    def sink(used_s: float, _: Measurement) -> None:
        into[key] = into.get(key, 0.0) + used_s

    return sink


def _per_request(into: list[float]) -> Callable[[float, Measurement], None]:
    """A ``_cpu_meter`` sink appending each round's CPU milliseconds per request sent (answered or failed: a failed
    one used CPU too) to ``into``."""

    def sink(used_s: float, measurement: Measurement) -> None:
        last = measurement.rounds[-1] if measurement.rounds else Round()
        sent = len(last.latencies_s) + len(last.errors)
        into.append(1000 * used_s / sent if sent else math.nan)

    return sink


def _slow_clients(port: int, count: int, settle_s: float, held: dict[str, int]) -> Around:
    """Holds ``count`` slow connections open during each round; ``held`` gets how many the server still held at the
    end of the last round, per kind."""

    @contextlib.contextmanager
    def around(_: Measurement) -> Iterator[None]:
        slow = SlowClients(port, count)
        try:
            slow.open()
            time.sleep(settle_s)  # the non-readers' answers fill their buffers; every connection is accepted
            yield
            held.clear()
            held.update(slow.open_count())
        finally:
            slow.close()

    return around


def wire_bytes(address: str, model: str, photo: bytes) -> int:
    """The serialized size of the PredictRequest the proxy sends TF Serving for ``photo`` and ``model``: built by the
    proxy's own ``ServingBackend`` (its signature learned from the stand-in, its ``_request``), not sent."""
    from proxy.backends import CallLimit, LabelMaps
    from proxy.backends.serving import ModelSpec, ServingBackend, ServingConnection
    from proxy.images import ImageInput, ImageLimits
    from proxy.settings import Settings

    connection = ServingConnection(address)
    try:
        backend = ServingBackend(
            ModelSpec(model), connection, calls=CallLimit(1), labels=LabelMaps(None), request_timeout_s=10
        )
        signature = backend._signature_for(time.monotonic() + 10)
        assert signature.input_type is not None
        image = ImageInput(photo, ImageLimits.from_settings(Settings()))
        return len(backend._request(signature, image, signature.input_type))
    finally:
        connection.close()


def answer_of(client: HttpClient) -> str:
    """One request's answer, compact."""
    try:
        client.connect()
        client.request()
        return json.dumps(json.loads(client.last_answer), sort_keys=True)
    except (RequestFailed, ValueError) as exc:
        return f"failed: {exc}"
    finally:
        client.close()


def floor_answer(address: str, photo: bytes) -> str:
    """The floor's detections above the threshold, counted per COCO class id as /classify counts them by name."""
    client = FloorClient(address, photo, stack.DEFAULT_MODEL)
    try:
        client.connect()
        outputs = client.predict()
        scores = outputs["detection_scores"].reshape(-1)
        classes = outputs["detection_classes"].reshape(-1)[scores > THRESHOLD]
        return json.dumps({f"class {int(c)}": int((classes == c).sum()) for c in dict.fromkeys(classes.tolist())})
    except RequestFailed as exc:
        return f"failed: {exc}"
    finally:
        client.close()


@dataclass(frozen=True)
class Processes:
    """The processes a run measures, each started, each one's stop registered."""

    models: stack.Models
    stand_in: stack.StandIn
    tf_floor: stack.TfFloor
    grpc_floor: stack.GrpcFloor  # the bare gRPC client, for the demo models
    bare_flask: stack.Server  # the bare Flask app under the front
    embedded: stack.Server  # long connection timeouts: section 1's embedded proxy is section 6's too
    front: stack.Server  # serving mode, every model: sections 1 to 5 and 7, the large pictures, the answers
    gthread: stack.Server
    slow_serving: stack.Server  # serving mode with long connection timeouts, for section 6
    cached: stack.Server  # serving mode with the frame cache on, for Blue Iris's pair (section 8)


@dataclass
class RunState:
    """What the phases of a run share, and what they find besides the measurements ``bench`` keeps."""

    plan: Plan
    bench: Bench
    processes: Processes
    pictures: dict[str, bytes]
    memory_idle: stack.ProcessMemory
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # input type → process → CPU seconds, all rounds
    wire: dict[str, float] = field(default_factory=dict)  # input type → PredictRequest bytes
    memory: stack.ProcessMemory | None = None  # after the load
    held: dict[str, dict[str, int]] = field(default_factory=lambda: {report.SERVING: {}, report.EMBEDDED: {}})
    answers: dict[str, str] = field(default_factory=dict)
    cold_starts_s: list[float] = field(default_factory=list)
    # input type → side (report.S7_SIDES) → CPU ms per request, one per round
    overhead_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    overhead_wait_ms: dict[str, float] = field(default_factory=dict)
    spread: list[list[int]] = field(default_factory=list)  # 8 clients: connections per proxy worker, each round
    camera_found: dict[str, str] = field(default_factory=dict)  # section 8: variant → its answer
    pair_cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # section 8: variant → stand-in CPU per pair
    cache_counts: dict[str, float] = field(default_factory=dict)  # the cached proxy's frame cache hits and misses

    @property
    def photo(self) -> bytes:
        """The 640x480 photograph."""
        return self.pictures[photos.SMALL]

    def on_front(self) -> HttpClient:
        """A client sending the 640x480 photograph to the serving-mode proxy."""
        return image_client(self.processes.front.port, self.photo, CLASSIFY)


def run(quick: bool, out: Path) -> Results:
    """Set up every process, measure, read memory; every process is stopped on the way out, whatever happens."""
    plan = Plan.make(quick)
    began = time.monotonic()
    load_at_start = report.load_average()
    stop = threading.Event()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        log(f"work directory {work}")
        # Every process started inherits it, so a leftover one can be found by its environment.
        os.environ["CLASSIFYOBJECTS_BENCH_WORK"] = str(work)
        pictures = photos.make(out)
        processes = _start(cleanup, _models(work), out)
        memory_idle = stack.gunicorn_memory(_pid(processes.front))
        setup_s = time.monotonic() - began
        log(f"everything ready after {setup_s:.0f} s")

        # Registered last, so it runs first: clients stop issuing requests before their servers go away.
        cleanup.callback(stop.set)
        state = RunState(plan, Bench(plan, stop), processes, pictures, memory_idle)
        for phase in PHASES:
            phase(state)
        return _results(state, quick=quick, load_at_start=load_at_start, setup_s=setup_s)


def _models(work: Path) -> stack.Models:
    """The real detector both ways, exported and converted now or found in the cache."""
    log("exporting and converting the real detector both ways (python -m bench.models)")
    models = stack.prepare_models(work)
    log("the models are " + ("from the cache" if models.cached else "exported and converted"))
    return models


def _registered(cleanup: contextlib.ExitStack, server: stack.Server) -> stack.Server:
    # Each process's stop is registered before it starts, so an interrupted start is cleaned up too.
    cleanup.callback(server.discard_log)
    cleanup.callback(server.stop)
    return server


def _start(cleanup: contextlib.ExitStack, models: stack.Models, out: Path) -> Processes:
    """Start the TF Serving stand-in, the in-process floor and four proxies, all at once."""
    log("starting the TF Serving stand-in, five proxies and the floors")
    stand_in = stack.StandIn(models.config)
    cleanup.callback(stand_in.stop)
    metrics_dir = stack.metrics_dir()
    cleanup.callback(shutil.rmtree, metrics_dir, ignore_errors=True)

    tf_floor = stack.TfFloor(models.version_dir(stack.DEFAULT_MODEL), out / f"image-{photos.SMALL}.jpg", 5)
    cleanup.callback(tf_floor.stop)
    embedded = _registered(cleanup, stack.proxy(models, None, extra=stack.LONG_TIMEOUTS))
    front = _registered(cleanup, stack.proxy(models, stand_in.address, names=(*stack.SERVED, *stack.DEMOS)))
    bare_flask = _registered(cleanup, stack.bare_flask())
    gthread = _registered(cleanup, stack.gthread_proxy(models, stand_in.address, metrics_dir))
    slow_serving = _registered(cleanup, stack.proxy(models, stand_in.address, extra=stack.LONG_TIMEOUTS))
    cached = _registered(cleanup, stack.proxy(models, stand_in.address, frame_cache=True))
    # All at once: the serving-mode proxies poll /readyz until the stand-in answers.
    _start_all(
        {
            "the TF Serving stand-in": stand_in.start,
            "python -m proxy (embedded)": embedded.start,
            "python -m proxy (serving)": front.start,
            "gunicorn -k gthread": gthread.start,
            "python -m proxy (serving, for slow clients)": slow_serving.start,
            "python -m proxy (serving, the frame cache on)": cached.start,
            "python -m bench.tf_floor": tf_floor.start,
            "the bare Flask app": bare_flask.start,
        }
    )
    # Once the stand-in serves: the bare gRPC client warms every model up before it says READY.
    demos = {name: models.input_types[name] for name in stack.DEMOS}
    grpc_floor = stack.GrpcFloor(stand_in.address, out / f"image-{photos.SMALL}.jpg", demos, 20)
    cleanup.callback(grpc_floor.stop)
    grpc_floor.start()
    # Registered after every process's own stop, so it runs before them: all stop at once (each takes a second
    # or two), and their own stops find nothing left to do.
    cleanup.callback(_stop_all, [embedded, front, gthread, slow_serving, bare_flask, cached])
    return Processes(models, stand_in, tf_floor, grpc_floor, bare_flask, embedded, front, gthread, slow_serving, cached)


def _serving_floors(state: RunState) -> None:
    """1. The real detector, serving mode: the proxy against direct Predict, at 1 client and at 8."""
    address, photo = state.processes.stand_in.address, state.photo
    floor_1 = Variant("direct Predict (floor)", lambda: FloorClient(address, photo, stack.DEFAULT_MODEL), 1)
    proxy_1 = Variant("proxy, serving mode", state.on_front, 1)
    state.bench.compare(report.S1_LATENCY, [floor_1, proxy_1], state.plan.latency, 5)
    floor_8 = Variant("direct Predict (floor)", lambda: FloorClient(address, photo, stack.DEFAULT_MODEL), 8)
    proxy_8 = Variant("proxy, serving mode", state.on_front, 8, _spread_meter(state.processes.front, state.spread))
    state.bench.compare(report.S1_THROUGHPUT, [floor_8, proxy_8], state.plan.throughput, 16)


def _input_types(state: RunState) -> None:
    """2. encoded_image_string_tensor against image_tensor: the proxy's CPU per request, bytes to TF Serving."""
    front, stand_in, photo = state.processes.front, state.processes.stand_in, state.photo
    variants: list[Variant] = []
    for model, name in ((stack.DEFAULT_MODEL, report.IMAGE_TENSOR), (stack.ENCODED_MODEL, report.ENCODED)):
        make = functools.partial(image_client, front.port, photo, f"{CLASSIFY}&model={model}")
        state.bench.warm(make, 5)
        state.cpu[name] = {}
        meters = [
            _cpu_meter(lambda: front.workers, _summed(state.cpu[name], report.PROXY_WORKERS)),
            _cpu_meter(lambda: [stand_in.pid], _summed(state.cpu[name], report.STAND_IN)),
        ]
        variants.append(Variant(name, make, 1, _both(meters)))
    state.bench.compare(report.S2, variants, state.plan.cpu, 0)
    address = stand_in.address
    state.wire = {
        report.IMAGE_TENSOR: _or_nan(lambda: wire_bytes(address, stack.DEFAULT_MODEL, photo)),
        report.ENCODED: _or_nan(lambda: wire_bytes(address, stack.ENCODED_MODEL, photo)),
    }


def _batch(state: RunState) -> None:
    """3. One JSON batch of 8 against 8 single requests in a row."""
    port, body = state.processes.front.port, batch_body([state.photo] * BATCH)
    batch = Variant(
        f"one batch of {BATCH}", lambda: HttpClient(port, CLASSIFY, body, {"Content-Type": "application/json"}), 1
    )
    singles = Variant(f"{BATCH} single requests in a row", lambda: Repeated(state.on_front(), BATCH), 1)
    state.bench.compare(report.S3, [batch, singles], state.plan.batches, 1)


def _frigate(state: RunState) -> None:
    """4. Frigate's pattern."""
    port, frame = state.processes.front.port, state.pictures[photos.FRAME]
    frigate = Variant("Frigate's request", lambda: FrigateClient(port, frame), 1)
    state.bench.compare(report.S4, [frigate], state.plan.frigate, 3)


def _front_vs_gthread(state: RunState) -> None:
    """5. The front against gunicorn's threaded worker, same app, same environment."""
    port, photo = state.processes.gthread.port, state.photo
    gthread_8 = Variant("gunicorn -k gthread", lambda: image_client(port, photo, CLASSIFY), 8)
    front_8 = Variant("python -m proxy (the front)", state.on_front, 8)
    state.bench.compare(report.S5, [gthread_8, front_8], state.plan.throughput, 16)


def _large_then_memory(state: RunState) -> None:
    """The large picture against the small one, on the demo model (its own cost barely grows with the picture, so
    the proxy's does show); then the serving-mode proxy's memory, after all that load."""
    front, pictures, address = state.processes.front, state.pictures, state.processes.stand_in.address
    path = f"{CLASSIFY}&model={stack.DEMO_MODEL}"
    small = Variant(f"{photos.SMALL}, demo model", lambda: image_client(front.port, pictures[photos.SMALL], path), 1)
    large = Variant(f"{photos.LARGE}, demo model", lambda: image_client(front.port, pictures[photos.LARGE], path), 1)
    from proxy.settings import Settings

    side = Settings().max_image_side  # the default the proxy runs with
    floors = [
        Variant(
            f"{report.LARGE_FLOOR}, {name}",
            functools.partial(FloorClient, address, pictures[name], stack.DEMO_MODEL, side),
            1,
        )
        for name in (photos.SMALL, photos.LARGE)
    ]
    state.bench.compare(report.LARGE, [small, large, *floors], state.plan.large, 2)
    state.memory = stack.gunicorn_memory(_pid(front))


def _overhead(state: RunState) -> None:
    """7. The proxy's own CPU per request beyond both floors, on the demo models: the proxy's workers, the bare
    Flask app's workers and the bare gRPC client's process, each read around its own rounds; and the bare Flask app
    again, waiting in each request as long as the bare client's Predict takes (its median over a short run first)."""
    front, flask, floor, photo = (
        state.processes.front,
        state.processes.bare_flask,
        state.processes.grpc_floor,
        state.photo,
    )
    for model, input_type in ((stack.DEMO_MODEL, report.IMAGE_TENSOR), (stack.DEMO_ENCODED_MODEL, report.ENCODED)):
        sides: dict[str, list[float]] = {side: [] for side in report.S7_SIDES}
        state.overhead_ms[input_type] = sides
        wait_ms = 1000 * statistics.median(floor.run(model, WAIT_PROBE).latencies_s)
        state.overhead_wait_ms[input_type] = wait_ms
        to_proxy = functools.partial(image_client, front.port, photo, f"{CLASSIFY}&model={model}")
        to_flask = functools.partial(image_client, flask.port, photo, stack.BARE_FLASK_PATH)
        waiting = f"{stack.BARE_FLASK_PATH}?wait_ms={wait_ms:.2f}"
        to_waiting = functools.partial(image_client, flask.port, photo, waiting)
        state.bench.warm(to_proxy, 20)
        state.bench.warm(to_flask, 20)
        state.bench.warm(to_waiting, 20)
        variants = [
            Variant(
                f"{report.PROXY}, {input_type}",
                to_proxy,
                1,
                _cpu_meter(lambda: front.workers, _per_request(sides[report.PROXY])),
            ),
            Variant(
                f"{report.BARE_FLASK}, {input_type}",
                to_flask,
                1,
                _cpu_meter(lambda: flask.workers, _per_request(sides[report.BARE_FLASK])),
            ),
            Variant(
                f"{report.BARE_GRPC}, {input_type}",
                _no_client,
                1,
                runner=_grpc_rounds(floor, model, sides[report.BARE_GRPC]),
            ),
            Variant(
                f"{report.WAITING_FLASK}, {input_type}",
                to_waiting,
                1,
                _cpu_meter(lambda: flask.workers, _per_request(sides[report.WAITING_FLASK])),
            ),
        ]
        state.bench.compare(report.S7, variants, state.plan.overhead, 0)


def _camera(state: RunState) -> None:
    """8. Camera users: a 4000x3000 frame of small objects whole and with tile=640 (time and what was found); then
    Blue Iris's pair of requests for each new frame, against a proxy without and with the frame cache."""
    front, frame = state.processes.front, state.pictures[photos.CAMERA]
    paths = {"whole frame": CAMERA_PATH, "tile=640": f"{CAMERA_PATH}&tile=640"}
    tiles = [Variant(name, functools.partial(image_client, front.port, frame, path), 1) for name, path in paths.items()]
    # A quick run warms nothing up here: a tiled frame is 49 model calls.
    state.bench.compare(report.S8_TILES, tiles, state.plan.tiles, 0 if state.plan.quick else 1)
    state.camera_found = {name: answer_of(image_client(front.port, frame, path)) for name, path in paths.items()}
    stand_in, count = state.processes.stand_in, state.plan.rounds * (state.plan.pairs + 2) + 2
    variants = []
    for name, server in (
        (report.CACHE_OFF, state.processes.front),
        (report.CACHE_ON, state.processes.cached),
    ):
        frames, turn = photos.distinct_frames(state.photo, count), [0]
        state.pair_cpu_ms[name] = []
        make = functools.partial(BlueIrisPair, server.port, frames, stack.DEFAULT_MODEL, turn)
        meter = _cpu_meter(lambda: [stand_in.pid], _per_request(state.pair_cpu_ms[name]))
        variants.append(Variant(name, make, 1, meter))
    state.bench.compare(report.S8_PAIR, variants, state.plan.pairs, 0 if state.plan.quick else 1)
    state.cache_counts = stack.frame_cache_counts(state.processes.cached.port)


def _slow_serving(state: RunState) -> None:
    """6. Slow clients, serving mode: a proxy of its own on the same stand-in."""
    server, held = state.processes.slow_serving, state.held[report.SERVING]
    _slow_section(state.bench, state.plan, server, photo=state.photo, section=report.S6_SERVING, held=held)


def _embedded_floor(state: RunState) -> None:
    """1, embedded: the embedded proxy against TensorFlow in a process of its own, one request at a time."""
    tf_floor, port, photo = state.processes.tf_floor, state.processes.embedded.port, state.photo
    in_process = Variant("in-process TensorFlow (floor)", _no_client, 1, runner=_floor_rounds(tf_floor))
    proxy_embedded = Variant("proxy, embedded mode", lambda: image_client(port, photo, CLASSIFY), 1)
    state.bench.compare(report.S1_EMBEDDED, [in_process, proxy_embedded], state.plan.latency, 5)
    tf_floor.stop()


def _slow_embedded(state: RunState) -> None:
    """6. Slow clients, embedded mode: the embedded proxy of section 1."""
    server, held = state.processes.embedded, state.held[report.EMBEDDED]
    _slow_section(state.bench, state.plan, server, photo=state.photo, section=report.S6_EMBEDDED, held=held)


def _answers_and_cold_starts(state: RunState) -> None:
    """One request's answer from each, after the measurements; then the proxy's cold starts."""
    log("answers, cold starts")
    front, embedded, photo = state.processes.front, state.processes.embedded, state.photo
    address = state.processes.stand_in.address
    state.answers = {
        "direct Predict (floor), detector": floor_answer(address, photo),
        "proxy, serving mode, detector (image_tensor)": answer_of(state.on_front()),
        "proxy, serving mode, detector-encoded": answer_of(
            image_client(front.port, photo, f"{CLASSIFY}&model={stack.ENCODED_MODEL}")
        ),
        "proxy, embedded mode, detector": answer_of(image_client(embedded.port, photo, CLASSIFY)),
    }
    state.cold_starts_s = [stack.cold_start_s(state.processes.models, address) for _ in range(state.plan.cold_starts)]


# The phases of a run, in the order they run: adding a measurement is adding a phase.
PHASES: tuple[Callable[[RunState], None], ...] = (
    _serving_floors,
    _input_types,
    _batch,
    _frigate,
    _front_vs_gthread,
    _overhead,
    _camera,
    _large_then_memory,  # after sections 1 to 5 and 7: its memory is the memory after their load
    _slow_serving,
    _embedded_floor,
    _slow_embedded,
    _answers_and_cold_starts,
)


def _results(state: RunState, *, quick: bool, load_at_start: str, setup_s: float) -> Results:
    """What the phases found, with section 2's CPU time per request sent."""
    if state.memory is None:
        raise stack.StackError("no phase read the memory after the load")
    requests_2 = {name: _sent(state.bench, report.S2, name) for name in (report.IMAGE_TENSOR, report.ENCODED)}
    models = state.processes.models
    return Results(
        quick=quick,
        machine=report.machine(load_at_start, report.code_version()),
        measurements=state.bench.measurements,
        cpu_ms={
            name: {who: 1000 * seconds / max(1, requests_2[name]) for who, seconds in used.items()}
            for name, used in state.cpu.items()
        },
        wire_bytes=state.wire,
        photo_bytes={name: len(data) for name, data in state.pictures.items()},
        slow_connections=state.plan.slow_connections,
        slow_held=state.held,
        memory_idle=state.memory_idle,
        memory=state.memory,
        cold_starts_s=state.cold_starts_s,
        answers=state.answers,
        threshold=THRESHOLD,
        setup_s=setup_s,
        model_prep_s=models.export_s + models.convert_s,
        models_cached=models.cached,
        overhead_ms=state.overhead_ms,
        overhead_wait_ms=state.overhead_wait_ms,
        spread=state.spread,
        camera_found=state.camera_found,
        pair_cpu_ms=state.pair_cpu_ms,
        cache_counts=state.cache_counts,
    )


def _no_client() -> Client:
    raise RuntimeError("this variant measures its rounds itself")


def _floor_rounds(floor: stack.TfFloor) -> Callable[[int], Round]:
    """Rounds of the embedded floor: it measures n requests in its own process."""

    def runner(requests: int) -> Round:
        latencies = floor.run(requests)
        return Round(latencies, [], sum(latencies))

    return runner


def _spread_meter(server: stack.Server, into: list[list[int]], clients: int = 8) -> Around:
    """Reads, every 0.1 s of each round, how many connections each of ``server``'s workers holds; keeps the first
    reading with every client connected (the last reading, if none had)."""

    @contextlib.contextmanager
    def around(_: Measurement) -> Iterator[None]:
        found: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                counts = [len(established(pid, server.port)) for pid in server.workers]
                found[:] = counts
                if sum(counts) >= clients:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        yield
        done.set()
        sampler.join(5)
        into.append(list(found))

    return around


def _grpc_rounds(floor: stack.GrpcFloor, model: str, cpu_ms: list[float]) -> Callable[[int], Round]:
    """Rounds of the bare gRPC client: it measures n calls of ``model`` in its own process, and its CPU."""

    def runner(requests: int) -> Round:
        found = floor.run(model, requests)
        cpu_ms.append(1000 * found.cpu_s / len(found.latencies_s) if found.latencies_s else math.nan)
        return Round(found.latencies_s, [], sum(found.latencies_s))

    return runner


def _both(meters: list[Around]) -> Around:
    @contextlib.contextmanager
    def around(measurement: Measurement) -> Iterator[None]:
        with contextlib.ExitStack() as stack_:
            for meter in meters:
                stack_.enter_context(meter(measurement))
            yield

    return around


def _sent(bench: Bench, section: str, variant: str) -> int:
    """Requests a variant completed (no warm-up in that section), for per-request CPU."""
    return sum(m.completed + len(m.errors) for m in bench.measurements if (m.section, m.variant) == (section, variant))


def _slow_section(
    bench: Bench, plan: Plan, server: HttpServer, *, photo: bytes, section: str, held: dict[str, int]
) -> None:
    """Ordinary clients without, then with, the slow connections, alternating round by round."""
    ordinary = f"{ORDINARY_CLIENTS} ordinary clients"
    without = Variant(f"{ordinary}, alone", lambda: image_client(server.port, photo, CLASSIFY), ORDINARY_CLIENTS)
    with_slow = Variant(
        f"{ordinary}, {plan.slow_connections} slow connections open",
        lambda: image_client(server.port, photo, CLASSIFY),
        ORDINARY_CLIENTS,
        _slow_clients(server.port, plan.slow_connections, plan.settle_s, held),
    )
    bench.compare(section, [without, with_slow], plan.ordinary, 2 * ORDINARY_CLIENTS)


def _stop_all(servers: list[stack.Server]) -> None:
    threads = [threading.Thread(target=server.stop, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _pid(server: HttpServer) -> int:
    if server.process is None:
        raise stack.StackError(f"{server.args} is not running")
    return int(server.process.pid)


def _or_nan(compute: Callable[[], int]) -> float:
    try:
        return float(compute())
    except Exception as exc:  # the proxy's internals may change: the bench reports n/a rather than stopping
        log(f"cannot compute the PredictRequest size: {exc!r}")
        return float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the proxy on the real detector against floors measured in the same run; print the "
        "targets and write results.md and results.png.",
    )
    parser.add_argument("--quick", action="store_true", help="a few requests per measurement (a smoke run)")
    parser.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_DIR,
        metavar="DIR",
        help="directory for results.md, results.png and the photographs sent (default: the bench/ package directory)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; a failure is one line on stderr and exit status 1 (130 when interrupted)."""
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401  (checked now rather than after minutes of measuring)
    except ImportError:
        print("bench: error: matplotlib is not installed (pip install matplotlib==3.11.2)", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    began = time.monotonic()
    busy, own, steal = report.machine_busy_s(), report.own_cpu_s(), report.machine_steal_s()
    try:
        results = run(args.quick, args.out)
    except (KeyboardInterrupt, Interrupted):
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:  # StackError, and HttpServer's start failures with the server's log
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    results.duration_s = time.monotonic() - began
    # Every process the run started has stopped and been waited for: its CPU time is in own_cpu_s().
    results.other_cpu_s = max(0.0, (report.machine_busy_s() - busy) - (report.own_cpu_s() - own))
    results.steal_s = report.machine_steal_s() - steal
    if results.other_cpu_s > 0.1 * results.duration_s:
        log(f"other processes used {results.other_cpu_s:.0f} CPU-seconds during the run: the numbers are skewed")
    markdown_path, chart_path = report.write(results, args.out)
    print(report.checks_table(results))
    log(f"wrote {markdown_path} and {chart_path} in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

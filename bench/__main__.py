"""``python -m bench [--quick] [--out DIR]``: run the benchmark, print the targets, write results.md and .png."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report, stack
from bench.load import Client, FloorClient, HttpClient, Measurement, RequestFailed, run_round
from bench.report import FLOOR, LARGE, OLD_WAY, PROXY, SMALL, Results
from tests.support.processes import HttpServer

PACKAGE_DIR = Path(__file__).resolve().parent
SIZES = {SMALL: (640, 480), LARGE: (4000, 3000)}
SCENE_SEED = 7  # the same scene at both sizes: random_scene scales its shapes with the picture
JPEG_QUALITY = 90
COLD_STARTS = 3
THRESHOLD = 0.75  # sent explicitly, so a DEFAULT_THRESHOLD in the environment cannot make the variants differ
CLASSIFY_PATH = f"/classify?threshold={THRESHOLD}"


@dataclass(frozen=True)
class Phase:
    """How one variant is measured at one size and concurrency: rounds of bounded requests after a warm-up."""

    variant: str
    size: str
    clients: int
    rounds: int
    requests: int  # timed requests per round
    warmup: int  # untimed requests per round, spread over the clients
    time_limit_s: float  # per round: no new request starts after this


def plan(quick: bool) -> list[Phase]:
    """Every measurement of a run; ``quick`` keeps each one to a handful of requests."""
    phases = []
    for clients in (1, 8, 32):
        for variant in (FLOOR, PROXY):
            if quick:
                phases.append(Phase(variant, SMALL, clients, 1, min(clients, 8), min(clients, 8), 10))
                phases.append(Phase(variant, LARGE, clients, 1, min(clients, 4), 1, 20))
            else:
                phases.append(Phase(variant, SMALL, clients, 3, {1: 100, 8: 200, 32: 300}[clients], 2 * clients, 30))
                phases.append(Phase(variant, LARGE, clients, 2, {1: 12, 8: 24, 32: 48}[clients], clients, 60))
    # The old way takes seconds per 4000x3000 request, so it gets fewer requests, one round, and no 32 clients.
    if quick:
        phases += [Phase(OLD_WAY, SMALL, c, 1, 2, 1, 20) for c in (1, 8)]
        phases += [Phase(OLD_WAY, LARGE, c, 1, 1, 0, 30) for c in (1, 8)]
    else:
        phases += [Phase(OLD_WAY, SMALL, 1, 1, 20, 2, 60), Phase(OLD_WAY, SMALL, 8, 1, 40, 8, 90)]
        phases += [Phase(OLD_WAY, LARGE, 1, 1, 5, 1, 120), Phase(OLD_WAY, LARGE, 8, 1, 8, 1, 240)]
    return phases


def method(phases: list[Phase], proxy_workers: int) -> list[str]:
    """The method section of results.md, with the request counts actually planned."""
    from proxy.settings import Settings

    max_side = getattr(Settings(), "max_image_side", None)
    downscale = (
        f" Its default MAX_IMAGE_SIDE={max_side} has Pillow decode large JPEGs at a reduced scale; the floor does not."
        if max_side
        else ""
    )
    counts = "; ".join(
        f"{p.variant} {p.size} x{p.clients}: {p.rounds} x {p.requests} (+{p.warmup} warm-up)"
        for p in phases
        if p.variant != PROXY
    )
    return [
        "Everything on 127.0.0.1 of this one machine: load generator, proxy and TF Serving share its cores.",
        "Model: the demo detector (`python -m demo_model`), converted by `python -m converter --warmup`, served by "
        "the TF Serving stand-in `tests.support.fake_tfserving` (a TensorFlow Session over the SavedModel, answering "
        "in typed fields as TF Serving does); the real TF Serving binary cannot run here.",
        f"Images: `random_scene({SCENE_SEED})` at 640x480 and 4000x3000 (shapes scaled with the picture), JPEG "
        f"quality {JPEG_QUALITY}, written next to the results.",
        "floor: the client decodes the JPEG itself (Pillow, `np.asarray`, full resolution) and calls `Predict` on the "
        "stand-in over its own gRPC channel (`tensor_content`, unlimited message sizes); no proxy.",
        f"proxy: `python -m proxy` in serving mode with default settings ({proxy_workers} gunicorn workers x 8 "
        f"threads), `POST /classify` over HTTP.{downscale}",
        "old way: the seed service's method (`bench/seed_service.py`: `np.array(image.getdata())`, a new "
        "`tf.compat.v1.Session` per request), gunicorn with 1 worker x 8 threads, `POST /classify` over HTTP. It is "
        "slow, so it runs fewer requests, one round, and only 1 and 8 clients.",
        "Clients are threads of one process, each with its own keep-alive HTTP connection (http.client) or gRPC "
        "channel. Each round connects every client, runs the warm-up requests untimed, then starts all clients at "
        "once; no new request starts after the round's time limit. Throughput is completed requests over the time "
        "from the start to the last answer.",
        "Order: every 640x480 measurement, then every 4000x3000 one, then one request per variant and size to "
        "compare answers. At each size and concurrency, floor and proxy alternate round by round (who goes first "
        "rotates) and their rounds are pooled.",
        "Rounds x timed requests per round (the proxy runs the floor's): " + counts + ".",
        "RSS: `VmRSS` of each gunicorn worker (children of the master) after all the load; TensorFlow counts as "
        "loaded when its shared libraries appear in `/proc/<pid>/maps`.",
    ]


class Interrupted(Exception):
    """SIGTERM arrived: unwind so that every process started is stopped."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def write_images(out: Path) -> dict[str, bytes]:
    """The two JPEGs, written into ``out`` and returned as bytes."""
    from demo_model import random_scene

    images = {}
    for name, size in SIZES.items():
        picture, _shapes = random_scene(SCENE_SEED, size)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        images[name] = buffer.getvalue()
        (out / f"image-{name}.jpg").write_bytes(images[name])
    return images


def floor_counts(client: FloorClient, model_dir: Path) -> dict[str, int]:
    """The floor's answer turned into /classify counts with the proxy's own rules (outside any timing)."""
    from proxy.detections import Detections, count_by_class
    from proxy.labels import load_label_map

    detections = Detections.from_outputs(client.predict())
    return count_by_class(detections.above(THRESHOLD), load_label_map(model_dir / "label_map.pbtxt"))


def check_answers(
    images: dict[str, bytes], clients: dict[str, Callable[[bytes], Client]], model_dir: Path
) -> dict[str, dict[str, Any]]:
    """One request per variant and size; the counts, and whether all variants agree."""
    answers: dict[str, dict[str, Any]] = {}
    for size, body in images.items():
        answer: dict[str, Any] = {}
        for variant, make in clients.items():
            client = make(body)
            try:
                client.connect()
                if isinstance(client, FloorClient):
                    answer[variant] = floor_counts(client, model_dir)
                else:
                    assert isinstance(client, HttpClient)
                    client.request()
                    answer[variant] = json.loads(client.last_answer)
            except RequestFailed as exc:
                answer[variant] = None
                log(f"answer check: {variant} {size}: {exc}")
            finally:
                client.close()
        answer["agree"] = all(answer.get(v) is not None for v in clients) and all(
            answer[v] == answer[FLOOR] for v in clients
        )
        answers[size] = answer
    return answers


def log(line: str) -> None:
    """Progress on stderr; the results go to stdout."""
    print(f"bench: {line}", file=sys.stderr, flush=True)


def measure(
    phases: list[Phase], clients: dict[str, Callable[[bytes], Client]], images: dict[str, bytes], stop: threading.Event
) -> list[Measurement]:
    """Run every phase, size by size and concurrency by concurrency, alternating variants round by round."""
    measurements = {(p.variant, p.size, p.clients): Measurement(p.variant, p.size, p.clients) for p in phases}
    by_key = {(p.variant, p.size, p.clients): p for p in phases}
    groups = sorted({(p.size != SMALL, p.clients, p.size) for p in phases})
    for _, concurrency, size in groups:
        variants = [v for v in (FLOOR, PROXY, OLD_WAY) if (v, size, concurrency) in by_key]
        most_rounds = max(by_key[(v, size, concurrency)].rounds for v in variants)
        for index in range(most_rounds):
            # Rotate who goes first, so neither variant always runs on the heels of the other.
            rotated = variants[index % len(variants) :] + variants[: index % len(variants)]
            for variant in rotated:
                phase = by_key[(variant, size, concurrency)]
                if index >= phase.rounds:
                    continue
                result = run_round(
                    functools.partial(clients[variant], images[size]),
                    clients=concurrency,
                    requests=phase.requests,
                    warmup=phase.warmup,
                    time_limit_s=phase.time_limit_s,
                    stop=stop,
                )
                measurement = measurements[(variant, size, concurrency)]
                measurement.rounds.append(result)
                rate = len(result.latencies_s) / result.elapsed_s if result.elapsed_s else float("nan")
                log(
                    f"{size:>9} {concurrency:>2} clients {variant:<7} round {index + 1}/{phase.rounds}: "
                    f"{len(result.latencies_s)} ok, {len(result.errors)} errors, {rate:.2f} req/s"
                )
    return list(measurements.values())


def _start_in_background(server: HttpServer, what: str) -> Callable[[], None]:
    """Start ``server`` in a thread (it polls until ready); the returned call waits and re-raises a failure."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            server.start()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name=f"start-{what}", daemon=True)
    thread.start()

    def wait() -> None:
        while thread.is_alive():
            thread.join(0.2)  # a short join keeps Ctrl-C responsive
        if failures:
            raise stack.StackError(f"{what} did not start: {failures[0]}")

    return wait


def run(quick: bool, out: Path) -> Results:
    """Set up every process, measure, read memory; every process is stopped on the way out, whatever happens."""
    phases = plan(quick)
    load_at_start = report.load_average()
    stop = threading.Event()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        log(f"work directory {work}")
        log("writing the images, the demo model and its conversion")
        images = write_images(out)
        model = stack.prepare_model(work)

        log("starting the TF Serving stand-in and the old way")
        # Each process's stop is registered before it starts, so an interrupted start is cleaned up too.
        stand_in = stack.StandIn(model.base_path)
        cleanup.callback(stand_in.stop)
        old_way = stack.seed_service(model.model_dir)
        cleanup.callback(old_way.discard_log)
        cleanup.callback(old_way.stop)
        old_way_started = _start_in_background(old_way, "the old way (bench.seed_service under gunicorn)")
        stand_in.start()
        old_way_started()

        log("starting the proxy; timing its cold start")
        proxy = stack.proxy(model.model_dir, stand_in.address)
        cleanup.callback(proxy.discard_log)
        cleanup.callback(proxy.stop)
        proxy.start()
        assert proxy.process is not None and old_way.process is not None
        proxy_memory_idle = stack.gunicorn_memory(proxy.process.pid)
        cold_starts = [stack.cold_start_s(model.model_dir, stand_in.address) for _ in range(COLD_STARTS)]

        # Registered last, so it runs first: clients stop issuing requests before their servers go away.
        cleanup.callback(stop.set)
        clients: dict[str, Callable[[bytes], Client]] = {
            FLOOR: lambda body: FloorClient(stand_in.address, body, stack.MODEL_NAME),
            PROXY: lambda body: HttpClient(proxy.port, body, CLASSIFY_PATH),
            OLD_WAY: lambda body: HttpClient(old_way.port, body, CLASSIFY_PATH),
        }
        # Small images first and the answer check last: a worker's first large image leaves glibc's malloc with a
        # raised mmap threshold, which speeds up its later small ones, so the order is kept the same in every run.
        measurements = measure(phases, clients, images, stop)
        log("checking that every variant answers the same")
        answers = check_answers(images, clients, model.model_dir)

        proxy_memory = stack.gunicorn_memory(proxy.process.pid)
        old_way_memory = stack.gunicorn_memory(old_way.process.pid)
        return Results(
            quick=quick,
            machine=report.machine(load_at_start, report.code_version()),
            method=method(phases, len(proxy_memory.workers_mb)),
            measurements=measurements,
            proxy_memory_idle=proxy_memory_idle,
            proxy_memory=proxy_memory,
            old_way_memory=old_way_memory,
            cold_starts_s=cold_starts,
            threshold=THRESHOLD,
            answers=answers,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the proxy against direct Predict on TF Serving (the floor) and the seed service's "
        "method (the old way); print the targets and write results.md and results.png.",
    )
    parser.add_argument("--quick", action="store_true", help="a few requests per measurement (a smoke run)")
    parser.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_DIR,
        metavar="DIR",
        help="directory for results.md, results.png and the two JPEGs (default: the bench/ package directory)",
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
    markdown_path, chart_path = report.write(results, args.out)
    print(report.checks_table(results))
    print()
    print(report.measurements_table(results))
    print()
    log(f"wrote {markdown_path} and {chart_path} in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

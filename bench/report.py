"""The benchmark's outputs: the machine, the targets with PASS/MISS, ``results.md`` and ``results.png``."""

from __future__ import annotations

import datetime
import enum
import fnmatch
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.load import Measurement, Round
from bench.slow import KINDS, PIPELINED, TRICKLE_LENGTH
from bench.stack import ProcessMemory

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Measurement sections, as the tables and the chart name them.
S1_LATENCY = "1. serving, 640x480, 1 client"
S1_THROUGHPUT = "1. serving, 640x480, 8 clients"
S1_EMBEDDED = "1. embedded, 640x480, 1 client"
S2 = "2. input types, 640x480, 1 client"
S3 = "3. batch, 8 x 640x480, 1 client"
S4 = "4. Frigate, 320x320, 1 client"
S5 = "5. front vs gthread, 640x480, 8 clients"
LARGE = "4000x3000 against 640x480, demo model, serving, 1 client"
LARGE_FLOOR = "direct Predict (floor)"
S7 = "7. the proxy's own CPU, demo models, 640x480, 1 client"
S8_TILES = "8. camera, 4000x3000 frame of small objects, serving, 1 client"
S8_PAIR = "8. Blue Iris's pair, 640x480, serving, 1 camera"
CACHE_OFF, CACHE_ON = "frame cache off", "frame cache on"
S6_SERVING = "6. slow clients, serving"
S6_EMBEDDED = "6. slow clients, embedded"

IMAGE_TENSOR, ENCODED = "image_tensor", "encoded_image_string_tensor"
PROXY_WORKERS, STAND_IN = "proxy workers", "TF Serving stand-in"
PROXY, BARE_FLASK, BARE_GRPC = "proxy", "bare Flask app", "bare gRPC client"  # section 7's sides
WAITING_FLASK = "waiting Flask app"  # section 7: the bare Flask app sleeping as long as a Predict call in each request
S7_SIDES = (PROXY, BARE_FLASK, BARE_GRPC, WAITING_FLASK)
SERVING, EMBEDDED = "serving", "embedded"
FRIGATE_TIMEOUT_S = 0.1  # Frigate's DeepStack detector: api_timeout defaults to 0.1 s


class Comparison(enum.Enum):
    """Which side of its bound a target's value must be on; the value is the sign the tables show."""

    AT_MOST = "≤"
    AT_LEAST = "≥"

    def holds(self, value: float, bound: float) -> bool:
        """Whether ``value`` is on the right side of ``bound``."""
        return value <= bound if self is Comparison.AT_MOST else value >= bound


AT_MOST, AT_LEAST = Comparison.AT_MOST, Comparison.AT_LEAST


@dataclass(frozen=True)
class Check:
    """One target as measured: its value, the bound, and whether it was met."""

    name: str
    value: float
    bound: float
    comparison: Comparison
    unit: str = "x"

    @property
    def passed(self) -> bool:
        """PASS when the value is known and on the right side of the bound."""
        return not math.isnan(self.value) and self.comparison.holds(self.value, self.bound)

    @property
    def verdict(self) -> str:
        """PASS or MISS."""
        return "PASS" if self.passed else "MISS"

    def row(self) -> list[str]:
        """The check as table cells: name, measured, target, PASS/MISS."""
        bound = f"{self.comparison.value} {_number(self.bound, self.unit)}"
        return [self.name, _number(self.value, self.unit), bound, self.verdict]


@dataclass
class Results:
    """Everything one run measured."""

    quick: bool
    machine: dict[str, str]
    measurements: list[Measurement]
    cpu_ms: dict[str, dict[str, float]]  # input type → process → CPU milliseconds per request
    wire_bytes: dict[str, float]  # input type → serialized PredictRequest bytes
    photo_bytes: dict[str, int]
    slow_connections: int
    slow_held: dict[str, dict[str, int]]  # mode → kind → connections still held at the end of the last round
    memory_idle: ProcessMemory
    memory: ProcessMemory
    cold_starts_s: list[float]
    answers: dict[str, str]
    threshold: float
    setup_s: float
    model_prep_s: float
    models_cached: bool
    duration_s: float = math.nan
    other_cpu_s: float = math.nan  # CPU seconds other processes of the machine used during the run
    steal_s: float = math.nan  # CPU seconds stolen by the hypervisor during the run
    # Section 7: input type → side (S7_SIDES) → CPU ms per request, one value per round.
    overhead_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    overhead_wait_ms: dict[str, float] = field(default_factory=dict)  # section 7: input type → the waiting app's wait
    spread: list[list[int]] = field(default_factory=list)  # 8 clients: connections per proxy worker, each round
    camera_found: dict[str, str] = field(default_factory=dict)  # section 8: whole frame / tiled → the answer
    pair_cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # section 8: stand-in CPU ms per pair, rounds
    cache_counts: dict[str, float] = field(default_factory=dict)  # the cached proxy's frame cache, by result

    def find(self, section: str, variant_prefix: str = "") -> Measurement | None:
        """The first measurement of ``section`` whose variant starts with ``variant_prefix``."""
        for measurement in self.measurements:
            if measurement.section == section and measurement.variant.startswith(variant_prefix):
                return measurement
        return None

    def p(self, q: float, section: str, variant_prefix: str = "") -> float:
        """The ``q`` percentile latency in ms (NaN when not measured)."""
        found = self.find(section, variant_prefix)
        return found.percentile_ms(q) if found else math.nan

    def paired(self, section: str, numerator: str, denominator: str, metric: str) -> float:
        """The median over rounds of one variant's ``metric`` (``p50`` or ``throughput``) over another's in the same
        round: the variants of a comparison alternate round by round, so each pair ran under the same conditions."""
        top, bottom = self.find(section, numerator), self.find(section, denominator)
        if top is None or bottom is None:
            return math.nan
        ratios = [
            _ratio(_round_metric(a, metric), _round_metric(b, metric))
            for a, b in zip(top.rounds, bottom.rounds, strict=False)
        ]
        ratios = [r for r in ratios if not math.isnan(r)]
        return statistics.median(ratios) if ratios else math.nan

    def overhead(self, input_type: str) -> list[float]:
        """Section 7, one value per round: the proxy's CPU ms per request beyond both floors'."""
        sides = self.overhead_ms.get(input_type, {})
        rounds = zip(sides.get(PROXY, []), sides.get(BARE_FLASK, []), sides.get(BARE_GRPC, []), strict=False)
        return [proxy - flask - grpc for proxy, flask, grpc in rounds]

    def median_overhead_ms(self, input_type: str) -> float:
        """Section 7's median over rounds."""
        values = [v for v in self.overhead(input_type) if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    def wake_ms(self, input_type: str) -> list[float]:
        """Section 7, one value per round: the CPU ms per request the bare Flask app spends more when each of its
        requests waits as long as a Predict call."""
        sides = self.overhead_ms.get(input_type, {})
        rounds = zip(sides.get(WAITING_FLASK, []), sides.get(BARE_FLASK, []), strict=False)
        return [waiting - bare for waiting, bare in rounds]

    def spread_gap(self) -> float:
        """The largest difference, over the 8-client rounds, between the busiest and the idlest worker's count of
        connections."""
        gaps = [max(counts) - min(counts) for counts in self.spread if counts]
        return float(max(gaps)) if gaps else math.nan

    def throughput(self, section: str, variant_prefix: str) -> float:
        """Requests per second (NaN when not measured)."""
        found = self.find(section, variant_prefix)
        return found.throughput if found else math.nan

    def failures(self, section: str, variant_prefix: str) -> float:
        """Failed requests, warm-up included (NaN when not measured)."""
        found = self.find(section, variant_prefix)
        return float(len(found.errors)) if found else math.nan

    @property
    def cold_start_s(self) -> float:
        """The median cold start."""
        ordered = sorted(self.cold_starts_s)
        return ordered[len(ordered) // 2] if ordered else math.nan

    def held_share(self, mode: str) -> float:
        """The share of slow connections the server still held at the end of the last round with them."""
        held = self.slow_held.get(mode, {})
        return sum(held.values()) / self.slow_connections if held and self.slow_connections else math.nan

    def checks(self) -> list[Check]:
        """Every target, in the order of the sections."""
        return [target.check(self) for target in TARGETS]


# How a target's value is computed from the results: the helpers below build them from what they measure.
Value = Callable[[Results], float]


def _p(q: float, section: str, variant_prefix: str = "") -> Value:
    return lambda results: results.p(q, section, variant_prefix)


def _throughput(section: str, variant_prefix: str) -> Value:
    return lambda results: results.throughput(section, variant_prefix)


def _paired(section: str, numerator: str, denominator: str, metric: str = "p50") -> Value:
    return lambda results: results.paired(section, numerator, denominator, metric)


def _round_metric(one: Round, metric: str) -> float:
    if not one.latencies_s:
        return math.nan
    if metric == "p50":
        return statistics.median(one.latencies_s)
    return len(one.latencies_s) / one.elapsed_s if one.elapsed_s > 0 else math.nan


def _over(numerator: Value, denominator: Value) -> Value:
    return lambda results: _ratio(numerator(results), denominator(results))


def _slow_variant(results: Results, section: str, *, with_slow: bool) -> str:
    """The prefix of section 6's variant with the slow connections, or of the one without."""
    ordinary = _ordinary(results, section)
    return f"{ordinary}, {results.slow_connections}" if with_slow else f"{ordinary}, alone"


def _slow_p(q: float, section: str, *, with_slow: bool) -> Value:
    return lambda results: results.p(q, section, _slow_variant(results, section, with_slow=with_slow))


def _slow_failures(section: str) -> Value:
    return lambda results: results.failures(section, _slow_variant(results, section, with_slow=True))


def _held_share(mode: str) -> Value:
    return lambda results: results.held_share(mode)


def _proxy_cpu(input_type: str) -> Value:
    return lambda results: results.cpu_ms[input_type][PROXY_WORKERS]


def _wire_bytes(input_type: str) -> Value:
    return lambda results: results.wire_bytes[input_type]


def _serving_workers_with_tensorflow(results: Results) -> float:
    return float(sum(results.memory.workers_load_tensorflow.values()))


@dataclass(frozen=True)
class Target:
    """One row of the targets table: its name, how its value is computed, the bound it must meet, the unit shown."""

    name: str
    value: Value
    comparison: Comparison
    bound: float
    unit: str = "x"  # also picks the number's format: see _FORMATS

    def check(self, results: Results) -> Check:
        """The target as measured in ``results``."""
        return Check(self.name, self.value(results), self.bound, self.comparison, self.unit)


def _slow_targets(mode: str, section: str) -> tuple[Target, ...]:
    """Section 6's targets for one mode."""
    return (
        Target(
            f"6. {mode}: ordinary p50 with / without slow connections",
            _over(_slow_p(50, section, with_slow=True), _slow_p(50, section, with_slow=False)),
            AT_MOST,
            1.5,
        ),
        Target(
            f"6. {mode}: ordinary p99 with / without slow connections",
            _over(_slow_p(99, section, with_slow=True), _slow_p(99, section, with_slow=False)),
            AT_MOST,
            1.5,
        ),
        Target(
            f"6. {mode}: failed ordinary requests with slow connections",
            _slow_failures(section),
            AT_MOST,
            0,
            "requests",
        ),
        Target(f"6. {mode}: slow connections still held at the end", _held_share(mode), AT_LEAST, 1.0, "%"),
    )


# Every target, in the order of the sections; the targets table and the printed summary walk it.
TARGETS: tuple[Target, ...] = (
    Target(
        "1. serving, 640x480, 1 client: p50 proxy / direct Predict",
        _paired(S1_LATENCY, "proxy", "direct"),
        AT_MOST,
        1.15,
    ),
    Target(
        "1. serving, 640x480, 8 clients: throughput proxy / direct Predict",
        _paired(S1_THROUGHPUT, "proxy", "direct", "throughput"),
        AT_LEAST,
        0.93,
    ),
    Target(
        "1. serving, 8 clients: connections on the busiest proxy worker - the idlest",
        lambda results: results.spread_gap(),
        AT_MOST,
        1,
        "connections",
    ),
    Target(
        "1. embedded, 640x480, 1 client: p50 proxy / in-process TensorFlow",
        _paired(S1_EMBEDDED, "proxy", "in-process"),
        AT_MOST,
        1.15,
    ),
    Target(
        "2. proxy CPU per request: encoded_image_string_tensor / image_tensor",
        _over(_proxy_cpu(ENCODED), _proxy_cpu(IMAGE_TENSOR)),
        AT_MOST,
        0.75,
    ),
    Target(
        "2. PredictRequest bytes: encoded_image_string_tensor / image_tensor",
        _over(_wire_bytes(ENCODED), _wire_bytes(IMAGE_TENSOR)),
        AT_MOST,
        0.25,
    ),
    Target(
        "3. wall time: one batch of 8 / 8 single requests in a row",
        _paired(S3, "one batch", "8 single"),
        AT_MOST,
        1.0,
    ),
    Target("4. Frigate, 320x320, 1 client: p99", _p(99, S4), AT_MOST, FRIGATE_TIMEOUT_S * 1000, "ms"),
    Target(
        "5. 8 clients: throughput front / gthread",
        _paired(S5, "python -m proxy", "gunicorn", "throughput"),
        AT_LEAST,
        0.9,
    ),
    Target(
        "5. 8 clients: p50 front / gthread",
        _paired(S5, "python -m proxy", "gunicorn"),
        AT_MOST,
        1.1,
    ),
    *_slow_targets(SERVING, S6_SERVING),
    *_slow_targets(EMBEDDED, S6_EMBEDDED),
    Target(
        "7. proxy's own CPU per request beyond both floors, image_tensor (demo)",
        lambda results: results.median_overhead_ms(IMAGE_TENSOR),
        AT_MOST,
        0.5,
        "ms",
    ),
    Target(
        "7. proxy's own CPU per request beyond both floors, encoded_image_string_tensor (demo)",
        lambda results: results.median_overhead_ms(ENCODED),
        AT_MOST,
        0.5,
        "ms",
    ),
    Target(
        "demo model, serving, 1 client: p50 4000x3000 / 640x480",
        _paired(LARGE, "4000x3000", "640x480"),
        AT_MOST,
        3.0,
    ),
    Target(
        "serving-mode proxy worker RSS after the load (largest)",
        lambda results: results.memory.largest_worker_mb,
        AT_MOST,
        150,
        "MB",
    ),
    Target(
        "python -m proxy to first 200 on /healthz (median)", lambda results: results.cold_start_s, AT_MOST, 2.0, "s"
    ),
    Target(
        "serving-mode proxy workers with TensorFlow mapped", _serving_workers_with_tensorflow, AT_MOST, 0, "workers"
    ),
)


def _ordinary(results: Results, section: str) -> str:
    found = results.find(section)
    return found.variant.split(",")[0] if found else "?"


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


_FORMATS = {
    "x": "{:.2f}x",
    "%": "{:.0%}",
    "workers": "{:.0f} workers",
    "requests": "{:.0f} requests",
    "MB": "{:.0f} MB",
    "ms": "{:.2f} ms",
    "connections": "{:.0f} connections",
}


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    return _FORMATS.get(unit, "{:.2f} " + unit).format(value)


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every number."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used since boot, all cores (``/proc/stat``: user, nice, system,
    irq, softirq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave other guests while this machine's CPUs wanted to run (``/proc/stat`` steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process and its waited-for children (every process it started, once stopped) have used."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _written(path: str) -> bool:
    """Whether ``path`` (from the checkout's root) is one of the files a run writes into ``bench/`` by default: its
    results and the pictures it sends, which a previous run leaves changed."""
    folder, _, name = path.rpartition("/")
    return folder == "bench" and (name in ("results.md", "results.png") or fnmatch.fnmatch(name, "image-*.jpg"))


def code_version() -> str:
    """The commit measured, and which of the measured packages had uncommitted changes (read-only git commands)."""
    root = Path(__file__).resolve().parents[1]
    packages = ("proxy", "odapi", "converter", "demo_model", "harness", "bench")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *packages], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = sorted({line[3:].split("/", 1)[0] + "/" for line in dirty if len(line) > 3 and not _written(line[3:])})
    return head + (f" with uncommitted changes in {', '.join(changed)}" if changed else "")


def machine(load_at_start: str, code: str) -> dict[str, str]:
    """The machine and the versions that matter, read without importing TensorFlow."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    names = ("tensorflow", "grpcio", "pillow", "numpy", "gunicorn", "h11", "flask")
    versions = {name: importlib.metadata.version(name) for name in names}
    return {
        "CPU": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "TensorFlow (the stand-in, the embedded proxy)": versions["tensorflow"],
        "grpcio / Pillow / numpy": f"{versions['grpcio']} / {versions['pillow']} / {versions['numpy']}",
        "gunicorn / h11 / Flask": f"{versions['gunicorn']} / {versions['h11']} / {versions['flask']}",
        "code": code,
        # Only the load before the run says anything about other work: during it, the benchmark is the load.
        "load average before the run (1, 5, 15 min)": load_at_start,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` holds ``l`` or ``r`` per column (left by default)."""
    marks = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def checks_table(results: Results) -> str:
    """The targets as a markdown table."""
    return table(["target", "measured", "bound", "result"], [c.row() for c in results.checks()], "lrrl")


def measurements_table(results: Results, sections: Sequence[str]) -> str:
    """The measurements of ``sections``: rounds, requests, errors, p50, p99, throughput."""
    rows = []
    for m in results.measurements:
        if m.section not in sections:
            continue
        rows.append(
            [
                m.section,
                m.variant,
                str(m.clients),
                str(len(m.rounds)),
                str(m.completed),
                str(len(m.errors)),
                _ms(m.percentile_ms(50)),
                _ms(m.percentile_ms(99)),
                f"{m.throughput:.1f}" if not math.isnan(m.throughput) else "n/a",
                " / ".join(_ms(1000 * statistics.median(one.latencies_s)) for one in m.rounds if one.latencies_s),
            ]
        )
    header = [
        "measurement", "variant", "clients", "rounds", "requests", "errors", "p50 ms", "p99 ms", "req/s",
        "p50 ms of each round",
    ]  # fmt: skip
    return table(header, rows, "lllrrrrrrr")


def _errors(results: Results, sections: Sequence[str]) -> list[str]:
    lines = [
        f"- first error of {m.section} / {m.variant} ({len(m.errors)} in all): `{m.errors[0][:200]}`"
        for m in results.measurements
        if m.section in sections and m.errors
    ]
    return [*lines, ""] if lines else []


def _memory_line(name: str, memory: ProcessMemory) -> str:
    workers = ", ".join(f"{mb:.0f} MB" for _, mb in sorted(memory.workers_mb.items()))
    loaded = sum(memory.workers_load_tensorflow.values())
    return (
        f"- {name}: master {memory.master_mb:.0f} MB; workers {workers}; TensorFlow mapped in {loaded} of "
        f"{len(memory.workers_mb)} workers."
    )


GENERAL = [
    "Everything runs on 127.0.0.1 of this one machine: the load generator (one Python process, a thread per "
    "client), the proxies and the TF Serving stand-in share its cores.",
    "Model: the real default detector (SSDLite-MobileNetV2 trained on COCO, 80 classes, "
    "`converter.default_model.coco_default()`, a TF1 frozen graph with an `image_tensor` input), and the same "
    "network behind an `encoded_image_string_tensor` input "
    "(`demo_model.exports.tf1_frozen_graph(ENCODED_IMAGE_STRING_TENSOR, frozen_detector(graph))`), both "
    "converted with warm-up records by the project's converter (`python -m bench.models`). Sections 7 and the "
    "large pictures serve the demo detector (`demo_model`, a few TensorFlow ops) both ways, `demo` and "
    "`demo-encoded`, so the model's cost does not hide the proxy's.",
    "TF Serving: the stand-in `tests.support.fake_tfserving` (a TensorFlow Session per model over the converted "
    "SavedModels, 32 gRPC threads), started with `harness.tfserving.start_server`; the real binary cannot run here.",
    "Pictures (written next to these results): `image-640x480.jpg` is `docs/person.jpg` (512x512, one person), its top "
    "512x384 scaled to 640x480 (Lanczos), JPEG quality 90; `image-320x320.jpg` is the whole photograph scaled to "
    "320x320 and saved as Frigate saves frames (Pillow's default JPEG quality, 75); `image-4000x3000.jpg` is the "
    "640x480 one scaled up (bicubic), quality 90.",
    "Proxies: `python -m proxy` (gunicorn, the front `proxy.front.worker.FrontWorker`) with default settings: "
    "serving mode 2 workers x 8 threads, embedded mode 1 worker x 8 threads. Configured by environment only: "
    "`MODELS` (both models in serving mode, the detector alone in embedded mode), `SERVING_ADDRESS`, `API_KEY=` "
    "(none), `LOG_FORMAT=json`.",
    "Clients: each holds its own keep-alive connection (http.client; a `requests.Session` for Frigate's pattern; a "
    "gRPC channel of its own for direct Predict). A round connects every client, runs warm-up requests untimed, "
    "then starts every client at once; it ends after its request count (or 60 s). The variants of a comparison "
    "alternate round by round, who goes first rotating, and their rounds are pooled. Latency is one request's "
    "time, sent to answer read; throughput is completed requests over the time from the start to the last answer.",
    f"Every `/classify` request asks `threshold={0.75}` explicitly.",
]


@dataclass(frozen=True)
class Section:
    """One ``## heading`` of ``results.md`` after the general ones, and the lines that follow it."""

    heading: str
    body: Callable[[Results], list[str]]


def _floors(results: Results) -> list[str]:
    return [
        "- **Serving mode**: `POST /classify` with the 640x480 JPEG as the body to the serving-mode proxy, against "
        "**direct Predict** (the floor): a client that decodes the same JPEG itself (Pillow, `np.asarray`), builds "
        "the `PredictRequest` (`tensor_content`) and calls `Predict` on the same stand-in over its own gRPC channel. "
        "p50 at 1 client; throughput at 8 clients.",
        "- **Embedded mode**: the same request to `python -m proxy` without `SERVING_ADDRESS` (TensorFlow in the "
        "worker; the proxy of section 6, whose long connection timeouts do not touch a request that arrives at once), "
        "against **in-process TensorFlow** (the floor): `python -m bench.tf_floor`, a process of its own "
        "that loads the same converted SavedModel as the embedded backend does (`tf.saved_model.load`, "
        "`serving_default`), then per request decodes the JPEG with Pillow and calls the signature. One request at "
        "a time in both, rounds alternating as everywhere: the floor's process is started once (TensorFlow takes "
        "seconds to import) and measures a round of requests on each command; its throughput is one over its mean "
        "latency.",
        "",
        measurements_table(results, [S1_LATENCY, S1_THROUGHPUT, S1_EMBEDDED]),
        "",
        "Each ratio of the targets is the median over the rounds of the ratio within a round (the variants alternate "
        "round by round, so a pair ran under the same conditions).",
        "",
        "- **Connections per worker, 8 clients**: in each 8-client round of the proxy, as soon as all 8 clients "
        "have connected (read every 0.1 s), the established connections each serving-mode worker holds on the "
        "proxy's port (`/proc/<pid>/fd` against `/proc/net/tcp`): "
        + ("; ".join(" / ".join(str(c) for c in counts) for counts in results.spread) or "n/a")
        + " (one round per group, one number per worker).",
        "",
        *_errors(results, [S1_LATENCY, S1_THROUGHPUT, S1_EMBEDDED]),
    ]


def _overhead(results: Results) -> list[str]:
    rows = []
    for input_type in (IMAGE_TENSOR, ENCODED):
        sides = results.overhead_ms.get(input_type, {})
        medians = [statistics.median(sides[side]) if sides.get(side) else math.nan for side in S7_SIDES]
        wakes = [value for value in results.wake_ms(input_type) if not math.isnan(value)]
        wait = results.overhead_wait_ms.get(input_type, math.nan)
        rows.append(
            [
                input_type,
                *(f"{value:.2f}" if not math.isnan(value) else "n/a" for value in medians[:3]),
                _number(results.median_overhead_ms(input_type), "ms"),
                " / ".join(f"{value:.2f}" for value in results.overhead(input_type)),
                f"{medians[3]:.2f} ({wait:.1f} ms)" if not math.isnan(medians[3]) else "n/a",
                _number(statistics.median(wakes), "ms") if wakes else "n/a",
            ]
        )
    return [
        "The proxy's own CPU per request, beyond what any Flask service on this front and any client of TF Serving "
        "must spend, measured on the demo detector (a few TensorFlow ops: the model's cost does not hide the "
        "proxy's) with its two input types. Four sides, alternating round by round, one request at a time (the "
        "target takes the first three):",
        "- **proxy**: `POST /classify?model=demo` (or `demo-encoded`) with the 640x480 JPEG to the serving-mode "
        "proxy; the CPU of its workers.",
        "- **bare Flask app**: `bench.bare_flask` (one route that reads the body and answers a small JSON) under the "
        "same server, `gunicorn -k proxy.front.worker.FrontWorker`, 2 workers x 8 threads; the CPU of its workers, "
        "for the same request.",
        "- **bare gRPC client**: `python -m bench.grpc_floor`, a process of its own doing the unavoidable work for "
        "the input type (for `image_tensor`: decode the JPEG with Pillow, send the pixels as `tensor_content`; for "
        "`encoded_image_string_tensor`: send the bytes as they came), then the blocking `Predict` on the same "
        "stand-in and the outputs read as numpy; the CPU of its process (`time.process_time`).",
        "CPU is user + system time read before and after each round (`/proc/<pid>/stat`, all threads; 10 ms ticks, "
        "so each round sends enough requests for a resolution of a few hundredths of a millisecond). The overhead "
        "is proxy - bare Flask - bare gRPC client within each round; the target is its median over the rounds.",
        "- **waiting Flask app** (not part of the target): the bare Flask app again, `?wait_ms=N` making its route "
        "sleep N ms in each request, N the median latency of 30 calls of the bare gRPC client just before (in "
        "brackets below), as long as the proxy's request waits for its model. What it spends more than the bare app "
        "is the cost of waking after the wait (the last column), which every service that waits for its model pays "
        "and which the bare app's floor does not count. The bare gRPC client's CPU counts its own wake from its "
        "blocking call, so proxy - waiting Flask - bare gRPC client would count one thread's wake twice.",
        "",
        table(
            [
                "input type",
                "proxy ms",
                "bare Flask ms",
                "bare gRPC client ms",
                "overhead (median)",
                "overhead of each round",
                "waiting Flask ms (its wait)",
                "waiting - bare Flask (median)",
            ],
            rows,
            "lrrrrlrr",
        ),
        "",
        measurements_table(results, [S7]),
        "",
        *_errors(results, [S7]),
    ]


def _input_types(results: Results) -> list[str]:
    cpu, wire = results.cpu_ms, results.wire_bytes
    photo_kb = results.photo_bytes.get("640x480", 0) / 1000
    return [
        "The same 640x480 request to the serving-mode proxy, `?model=detector` (image_tensor: the proxy decodes the "
        "JPEG and sends pixels) and `?model=detector-encoded` (the proxy forwards the JPEG's bytes as sent; the model "
        "decodes them), alternating rounds at 1 client, no warm-up inside the rounds (5 untimed requests each "
        "before).",
        "- **CPU per request**: user + system time of every proxy worker (`/proc/<pid>/stat` fields 14 and 15, all "
        "threads, clock ticks of 10 ms) read before and after each round, summed over the rounds, divided by the "
        "requests sent. The stand-in's process is read the same way.",
        "- **Bytes to TF Serving per request**: the serialized size (`ByteSize()`) of the very `PredictRequest` the "
        "proxy sends, built by the proxy's own code (`proxy.backends.serving.ServingBackend`: the signature learned "
        "from the stand-in's `GetModelMetadata`, then its `_request` for the same picture); it is computed, not "
        "captured. gRPC adds a 5-byte frame header and HTTP/2 framing to it.",
        "",
        table(
            ["input type", "proxy CPU ms / request", "stand-in CPU ms / request", "PredictRequest bytes"],
            [
                [
                    name,
                    _ms(cpu.get(name, {}).get(PROXY_WORKERS, math.nan)),
                    _ms(cpu.get(name, {}).get(STAND_IN, math.nan)),
                    f"{wire.get(name, math.nan):,.0f}" if not math.isnan(wire.get(name, math.nan)) else "n/a",
                ]
                for name in (IMAGE_TENSOR, ENCODED)
            ],
            "lrrr",
        ),
        "",
        f"The JPEG itself is {photo_kb:.1f} KB; 640x480 RGB pixels are 921.6 KB.",
        "",
        measurements_table(results, [S2]),
        "",
        *_errors(results, [S2]),
    ]


def _batch(results: Results) -> list[str]:
    return [
        'One `POST /classify` with `{"images": [8 x base64 of the 640x480 JPEG]}` (`Content-Type: '
        "application/json`) against 8 `POST /classify` of the JPEG in a row on one connection; each timed as a "
        "whole (the wall time below is its latency), 1 client, serving mode.",
        "",
        measurements_table(results, [S3]),
        "",
        *_errors(results, [S3]),
    ]


def _frigate(results: Results) -> list[str]:
    over = results.find(S4)
    share = over.share_over(FRIGATE_TIMEOUT_S) if over else math.nan
    return [
        "Frigate's DeepStack detector (frigate/detectors/plugins/deepstack.py) as it sends: one `requests.Session` "
        'kept alive, `session.post(URL, data={"api_key": ""}, files={"image": jpeg})` to '
        "`/v1/vision/detection`, the answer parsed as JSON; one frame at a time (Frigate's detector process "
        "waits for each answer). The frame is the 320x320 JPEG. The bench's timeout is long, so slow answers are "
        f"measured; Frigate's default `api_timeout` is {FRIGATE_TIMEOUT_S} s.",
        "",
        measurements_table(results, [S4]),
        "",
        f"Answers slower than Frigate's {FRIGATE_TIMEOUT_S} s timeout: "
        + (f"{100 * share:.2f}%." if not math.isnan(share) else "n/a."),
        "",
        *_errors(results, [S4]),
    ]


def _front_vs_gthread(results: Results) -> list[str]:
    return [
        "The same app and environment (`SERVING_ADDRESS`, `MODELS`, ...) under `gunicorn -k gthread --threads 8 "
        "--workers 2 'proxy.app:create_app()'` and under `python -m proxy` (2 workers x 8 threads, the front); a "
        "fresh `PROMETHEUS_MULTIPROC_DIR` for gthread, as `python -m proxy` makes for itself. `python -m proxy` "
        "also tunes glibc's malloc in each worker after the fork (`post_fork`); plain gunicorn does not. 8 "
        "clients, `POST /classify` with the 640x480 JPEG.",
        "",
        measurements_table(results, [S5]),
        "",
        *_errors(results, [S5]),
    ]


def _slow_clients(results: Results) -> list[str]:
    count = results.slow_connections
    parts = [
        f"{count} connections held open against a proxy while 4 ordinary clients send `POST /classify` with the "
        "640x480 JPEG, against the same clients with none; rounds alternate, the slow connections are opened "
        "before each round with them (and a short settling pause) and closed after it. A quarter of each kind: "
        "**headers** (`POST /classify` and part of its headers, never their end), **trickle** (whole headers, "
        f"`Content-Length: {TRICKLE_LENGTH}`, then one body byte per second), **silent** (connects, sends nothing), "
        f"**non-reader** (a 4 KiB receive buffer and 1 KiB segments, `TCP_MAXSEG`, so that the server's kernel "
        f"buffers about 80 KB rather than loopback's 700 KB; {PIPELINED} pipelined `GET /openapi.json` of 88 KB each, "
        "never reads: the first answer never drains). "
        "Each proxy keeps them: `REQUEST_HEADER_TIMEOUT_S`, `REQUEST_READ_TIMEOUT_S`, `SEND_TIMEOUT_S` and "
        "`KEEPALIVE_TIMEOUT_S` of 900 s, `REQUEST_MIN_RATE_BYTES=0`. Serving mode: a `python -m proxy` of its own "
        "(2 workers) on the same stand-in. Embedded mode: the embedded proxy of section 1 (1 worker). At the end "
        "of each round with them, each slow socket's TCP state (`TCP_INFO`) tells whether the proxy still holds "
        "it (ESTABLISHED) or closed it.",
        "",
        measurements_table(results, [S6_SERVING, S6_EMBEDDED]),
        "",
    ]
    for mode in (SERVING, EMBEDDED):
        held = results.slow_held.get(mode, {})
        per_kind = ", ".join(f"{kind} {held.get(kind, 0)}" for kind in KINDS)
        parts.append(
            f"- {mode}: still held at the end of the last round: {sum(held.values())} of {count} ({per_kind})."
        )
    return [*parts, "", *_errors(results, [S6_SERVING, S6_EMBEDDED])]


def _camera(results: Results) -> list[str]:
    cpu = results.pair_cpu_ms
    counts = ", ".join(f"{result} {value:.0f}" for result, value in sorted(results.cache_counts.items())) or "n/a"
    return [
        "- **Tiles**: the committed cat and cameraman photographs pasted a few hundred pixels wide into a 4000x3000 "
        "frame (`harness.frames`, as the camera tests make it), `POST /classify?threshold=0.5` whole and with "
        "`&tile=640` (SAHI's slices with 20% overlap, plus the whole frame, merged), the COCO detector, the "
        "serving-mode proxy, 1 client, rounds alternating. What each found:",
        "",
        table(["variant", "answer"], [[name, f"`{answer}`"] for name, answer in results.camera_found.items()], "ll"),
        "",
        measurements_table(results, [S8_TILES]),
        "",
        "- **Blue Iris's pair**: Blue Iris sends each new frame at once to `/v1/vision/detection` and to "
        "`/v1/vision/custom/NAME` (the same model), each on a kept-alive connection of its own (multipart `image`). "
        "One timed request is the pair, until both answers are in; every pair sends a frame of its own (one pixel "
        "changed), so a cache helps only within a pair, as with the camera. Against the serving-mode proxy with the "
        "frame cache off and a second one with it on (`FRAME_CACHE_S` at its default), rounds alternating; the "
        "stand-in's CPU per pair is read around each round.",
        "",
        table(
            ["variant", "stand-in CPU ms per pair (median of rounds)"],
            [
                [name, f"{statistics.median(cpu[name]):.1f}" if cpu.get(name) else "n/a"]
                for name in (CACHE_OFF, CACHE_ON)
            ],
            "lr",
        ),
        "",
        measurements_table(results, [S8_PAIR]),
        "",
        f"The cached proxy's frame cache over the whole section (`classifyobjects_frame_cache_total`): {counts}.",
        "",
        *_errors(results, [S8_TILES, S8_PAIR]),
    ]


def _large_floor_line(results: Results) -> str:
    floor = results.paired(LARGE, f"{LARGE_FLOOR}, 4000x3000", f"{LARGE_FLOOR}, 640x480", "p50")
    proxy = results.paired(LARGE, "4000x3000", "640x480", "p50")
    beyond = [
        results.p(50, LARGE, name) - results.p(50, LARGE, f"{LARGE_FLOOR}, {name}") for name in ("640x480", "4000x3000")
    ]
    return (
        f"p50 4000x3000 / 640x480 (median over rounds): the proxy {_number(proxy, 'x')}, its floor "
        f"{_number(floor, 'x')}; the proxy's p50 beyond the floor's: {_ms(beyond[0])} ms on 640x480, "
        f"{_ms(beyond[1])} ms on 4000x3000."
    )


def _large_memory_start_up(results: Results) -> list[str]:
    return [
        "- **4000x3000**: the 4000x3000 JPEG against the 640x480 one (the same scene), `?model=demo` on the "
        "serving-mode proxy, 1 client, rounds alternating; the target is the median over rounds of the p50 ratio. "
        "The demo model's own cost barely grows with the picture (the proxy scales it to at most "
        "`MAX_IMAGE_SIDE=1024`, decoding large JPEGs at a reduced DCT scale), so the proxy's does show. "
        f"Its floor, in the same rounds: **{LARGE_FLOOR}** of each picture, decoded as the proxy decodes it (the "
        "draft scale and fit of `MAX_IMAGE_SIDE`, the same pixels) by a client calling Predict on the same "
        "stand-in: what the ratio would be if the proxy cost nothing beyond the decode it must do.",
        "",
        measurements_table(results, [LARGE]),
        "",
        _large_floor_line(results),
        "",
        "- **RSS**: `VmRSS` (`/proc/<pid>/status`) of the section 1 serving-mode proxy's master and workers, idle "
        "after start and after every load of sections 1 to 5 and the large pictures; TensorFlow counts as mapped "
        "when `libtensorflow` or `_pywrap_tensorflow` appears in `/proc/<pid>/maps`.",
        _memory_line("idle after start", results.memory_idle),
        _memory_line("after the load", results.memory),
        "- **Cold start**: from spawning `python -m proxy` (serving mode, the stand-in running, files in the page "
        "cache) to its first 200 on `/healthz`, polled every 5 ms: "
        + ", ".join(f"{s:.2f} s" for s in results.cold_starts_s)
        + f"; median {results.cold_start_s:.2f} s.",
        "",
    ]


def _answers(results: Results) -> list[str]:
    return [
        f"One request each, after the measurements, the 640x480 photograph, threshold {results.threshold} (the floor's "
        "scores counted the same way):",
        "",
        table(["who", "answer"], [[who, f"`{answer}`"] for who, answer in results.answers.items()]),
        "",
    ]


# The sections after the targets and the general method, in order: adding a section is adding a row.
SECTIONS: tuple[Section, ...] = (
    Section("1. The real detector against its floors", _floors),
    Section("2. `encoded_image_string_tensor` against `image_tensor`", _input_types),
    Section("3. A batch against single requests", _batch),
    Section("4. Frigate's pattern", _frigate),
    Section("5. The front against gunicorn's threaded worker", _front_vs_gthread),
    Section("6. Slow clients", _slow_clients),
    Section("7. The proxy's own CPU beyond its floors", _overhead),
    Section("8. Camera users: tiles and Blue Iris's pair", _camera),
    Section("Large pictures, memory, start-up", _large_memory_start_up),
    Section("Answers", _answers),
)


def _written_by(results: Results) -> list[str]:
    """The title and how the run went."""
    parts = ["# `make bench` results", ""]
    if results.quick:
        parts += ["**Quick run (`--quick`): a few requests per measurement, the numbers mean nothing.**", ""]
    models = (
        "the models from `python -m bench.models`' cache (exporting and converting them took "
        f"{results.model_prep_s:.0f} s)"
        if results.models_cached
        else f"{results.model_prep_s:.0f} s of it exporting and converting the models"
    )
    return [
        *parts,
        f"Written by `python -m bench` in {results.duration_s:.0f} s ({results.setup_s:.0f} s of it setting up, "
        f"{models}). Every ratio compares numbers measured in this same run.",
        "",
    ]


def _machine_table(results: Results) -> str:
    """The machine, and how much of it other work took during the run."""
    machine_rows = [[key, value] for key, value in results.machine.items()]
    cores = int(results.machine.get("cores", "1") or 1)
    machine_rows.append(
        [
            "CPU time other processes used during the run",
            f"{results.other_cpu_s:.0f} s of the {cores * results.duration_s:.0f} s the {cores} cores had "
            "(`/proc/stat` busy time, less the benchmark's own processes)",
        ]
    )
    machine_rows.append(
        ["CPU time stolen by the hypervisor during the run", f"{results.steal_s:.0f} s (`/proc/stat` steal)"]
    )
    return table(["", ""], machine_rows)


def markdown(results: Results, chart_name: str) -> str:
    """The whole ``results.md``."""
    parts = _written_by(results)
    parts += ["## Machine", "", _machine_table(results), ""]
    parts += ["## Targets", "", checks_table(results), "", f"![the measurements]({chart_name})", ""]
    parts += ["## How everything is measured", "", *[f"- {line}" for line in GENERAL], ""]
    for section in SECTIONS:
        parts += [f"## {section.heading}", "", *section.body(results)]
    return "\n".join(parts)


FLOOR_COLOUR, PROXY_COLOUR, OTHER_COLOUR = "tab:green", "tab:blue", "tab:orange"


def _bars(ax: Axes, labels: list[str], values: list[float], *, colours: list[str], unit: str, title: str) -> None:
    """A bar per value, each annotated with its number (n/a for one not measured)."""
    positions = list(range(len(values)))
    ax.bar(positions, [0 if math.isnan(v) else v for v in values], color=colours)
    for x, value in zip(positions, values, strict=True):
        text = "n/a" if math.isnan(value) else f"{value:.1f}"
        ax.annotate(text, (x, 0 if math.isnan(value) else value), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)


def _floors_panel(ax: Axes, results: Results) -> None:
    _bars(
        ax,
        ["serving\nfloor", "serving\nproxy", "embedded\nfloor", "embedded\nproxy"],
        [
            results.p(50, S1_LATENCY, "direct"),
            results.p(50, S1_LATENCY, "proxy"),
            results.p(50, S1_EMBEDDED, "in-process"),
            results.p(50, S1_EMBEDDED, "proxy"),
        ],
        colours=[FLOOR_COLOUR, PROXY_COLOUR, FLOOR_COLOUR, PROXY_COLOUR],
        unit="p50 ms",
        title="1. 640x480, 1 client: p50 against the floors",
    )


def _throughput_panel(ax: Axes, results: Results) -> None:
    _bars(
        ax,
        ["direct\nPredict", "proxy\n(front)", "gunicorn\ngthread", "proxy\n(front)"],
        [
            results.throughput(S1_THROUGHPUT, "direct"),
            results.throughput(S1_THROUGHPUT, "proxy"),
            results.throughput(S5, "gunicorn"),
            results.throughput(S5, "python -m proxy"),
        ],
        colours=[FLOOR_COLOUR, PROXY_COLOUR, OTHER_COLOUR, PROXY_COLOUR],
        unit="requests / s",
        title="1 and 5. 640x480, 8 clients: throughput",
    )


def _input_types_panel(ax: Axes, results: Results) -> None:
    cpu = results.cpu_ms
    _bars(
        ax,
        ["image_tensor\nproxy", "encoded\nproxy", "image_tensor\nstand-in", "encoded\nstand-in"],
        [
            cpu[IMAGE_TENSOR].get(PROXY_WORKERS, math.nan),
            cpu[ENCODED].get(PROXY_WORKERS, math.nan),
            cpu[IMAGE_TENSOR].get(STAND_IN, math.nan),
            cpu[ENCODED].get(STAND_IN, math.nan),
        ],
        colours=[PROXY_COLOUR, OTHER_COLOUR, PROXY_COLOUR, OTHER_COLOUR],
        unit="CPU ms per request",
        title="2. input types: CPU per request (KB sent: "
        + " / ".join(f"{results.wire_bytes[n] / 1000:.0f}" for n in (IMAGE_TENSOR, ENCODED))
        + ")",
    )


def _batch_panel(ax: Axes, results: Results) -> None:
    _bars(
        ax,
        ["one batch\nof 8", "8 single\nrequests"],
        [results.p(50, S3, "one batch"), results.p(50, S3, "8 single")],
        colours=[PROXY_COLOUR, OTHER_COLOUR],
        unit="wall time, p50 ms",
        title="3. 8 pictures: one batch or 8 requests",
    )


def _frigate_panel(ax: Axes, results: Results) -> None:
    frigate = results.find(S4)
    if frigate is not None and frigate.completed:
        values = sorted(1000 * v for v in frigate.latencies_s)
        ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], color=PROXY_COLOUR)
    ax.axvline(FRIGATE_TIMEOUT_S * 1000, color="tab:red", linestyle="--", label="Frigate's 0.1 s timeout")
    ax.set_xlim(left=0)
    ax.set_xlabel("latency ms")
    ax.set_ylabel("share of requests")
    ax.set_title("4. Frigate's pattern, 320x320: latency distribution", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def _slow_clients_panel(ax: Axes, results: Results) -> None:
    labels, values, colours = [], [], []
    for mode, section in ((SERVING, S6_SERVING), (EMBEDDED, S6_EMBEDDED)):
        alone = _slow_variant(results, section, with_slow=False)
        with_slow = _slow_variant(results, section, with_slow=True)
        for q in (50, 99):
            labels += [f"{mode}\np{q} alone", f"{mode}\np{q} slow"]
            values += [results.p(q, section, alone), results.p(q, section, with_slow)]
            colours += [FLOOR_COLOUR, OTHER_COLOUR]
    _bars(
        ax,
        labels,
        values,
        colours=colours,
        unit="ms",
        title=f"6. ordinary clients alone / beside {results.slow_connections} slow connections",
    )
    ax.tick_params(axis="x", labelsize=6)


# The chart's panels, row by row on a grid of PANEL_ROWS x PANEL_COLUMNS.
PANELS: tuple[Callable[[Axes, Results], None], ...] = (
    _floors_panel,
    _throughput_panel,
    _input_types_panel,
    _batch_panel,
    _frigate_panel,
    _slow_clients_panel,
)
PANEL_ROWS, PANEL_COLUMNS = 2, 3


def chart(results: Results, path: Path) -> None:
    """Six panels: the latency and throughput comparisons, input types, batch, Frigate, slow clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(PANEL_ROWS, PANEL_COLUMNS, figsize=(16, 8.5))
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        panel(ax, results)
    title = f"make bench — {results.machine['CPU']}, {results.machine['cores']} cores, code {results.machine['code']}"
    figure.suptitle(title + (" (quick run: meaningless numbers)" if results.quick else ""), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(results: Results, out: Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    chart_path = out / "results.png"
    chart(results, chart_path)
    markdown_path = out / "results.md"
    markdown_path.write_text(markdown(results, chart_path.name), encoding="utf-8")
    return markdown_path, chart_path

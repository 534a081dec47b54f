"""The benchmark's outputs: the machine, the targets with PASS/MISS, ``results.md`` and ``results.png``."""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import Measurement
from bench.stack import ProcessMemory

FLOOR, PROXY, OLD_WAY = "floor", "proxy", "old way"
VARIANTS = (FLOOR, PROXY, OLD_WAY)
SMALL, LARGE = "640x480", "4000x3000"


@dataclass(frozen=True)
class Check:
    """One target from the issue: what was measured, the bound, and whether it was met."""

    name: str
    value: float
    bound: float
    at_most: bool  # True: value <= bound passes; False: value >= bound passes
    unit: str = "x"

    @property
    def passed(self) -> bool:
        """PASS when the value is known and on the right side of the bound."""
        if math.isnan(self.value):
            return False
        return self.value <= self.bound if self.at_most else self.value >= self.bound

    def row(self) -> list[str]:
        """The check as table cells: name, measured, target, PASS/MISS."""
        sign = "≤" if self.at_most else "≥"
        return [self.name, _number(self.value, self.unit), f"{sign} {_number(self.bound, self.unit)}", self.verdict]

    @property
    def verdict(self) -> str:
        """PASS or MISS."""
        return "PASS" if self.passed else "MISS"


@dataclass
class Results:
    """Everything one run measured."""

    quick: bool
    machine: dict[str, str]
    method: list[str]
    measurements: list[Measurement]
    proxy_memory_idle: ProcessMemory
    proxy_memory: ProcessMemory
    old_way_memory: ProcessMemory
    cold_starts_s: list[float]
    threshold: float
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def find(self, variant: str, size: str, clients: int) -> Measurement | None:
        """The measurement of ``variant`` at ``size`` and ``clients``, if it was run."""
        for measurement in self.measurements:
            if (measurement.variant, measurement.size, measurement.clients) == (variant, size, clients):
                return measurement
        return None

    def p50(self, variant: str, size: str, clients: int = 1) -> float:
        """p50 latency in ms (NaN when not measured)."""
        found = self.find(variant, size, clients)
        return found.percentile_ms(50) if found else math.nan

    def throughput(self, variant: str, size: str, clients: int) -> float:
        """Requests per second (NaN when not measured)."""
        found = self.find(variant, size, clients)
        return found.throughput if found else math.nan

    @property
    def cold_start_s(self) -> float:
        """The median cold start."""
        ordered = sorted(self.cold_starts_s)
        return ordered[len(ordered) // 2] if ordered else math.nan

    def checks(self) -> list[Check]:
        """The issue's targets, each against the floor (or the proxy) measured in this same run."""
        proxy_loads_tf = any(self.proxy_memory.workers_load_tensorflow.values())
        return [
            Check(
                f"{SMALL} p50, 1 client: proxy / floor",
                _ratio(self.p50(PROXY, SMALL), self.p50(FLOOR, SMALL)),
                1.15,
                at_most=True,
            ),
            Check(
                f"{SMALL} throughput, 8 clients: proxy / floor",
                _ratio(self.throughput(PROXY, SMALL, 8), self.throughput(FLOOR, SMALL, 8)),
                0.9,
                at_most=False,
            ),
            Check(
                f"proxy p50, 1 client: {LARGE} / {SMALL}",
                _ratio(self.p50(PROXY, LARGE), self.p50(PROXY, SMALL)),
                3.0,
                at_most=True,
            ),
            Check(
                f"{LARGE} p50, 1 client: old way / proxy",
                _ratio(self.p50(OLD_WAY, LARGE), self.p50(PROXY, LARGE)),
                50.0,
                at_most=False,
            ),
            Check("proxy worker RSS after the load (largest)", self.proxy_memory.largest_worker_mb, 150, True, "MB"),
            Check("python -m proxy to first 200 on /healthz (median of 3)", self.cold_start_s, 2.0, True, "s"),
            Check("proxy workers with TensorFlow loaded", float(proxy_loads_tf), 0, True, "workers"),
        ]


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"
    if unit == "workers":
        return f"{value:.0f}"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.2f} {unit}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every number."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def code_version() -> str:
    """The commit measured, and whether proxy/ had uncommitted changes (read-only git commands)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "proxy"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (" with uncommitted changes in proxy/" if dirty else "")


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
    versions = {name: importlib.metadata.version(name) for name in ("tensorflow", "grpcio", "pillow", "numpy")}
    return {
        "CPU": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "TensorFlow": versions["tensorflow"],
        "grpcio / Pillow / numpy": f"{versions['grpcio']} / {versions['pillow']} / {versions['numpy']}",
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
    return table(["target", "measured", "target value", "result"], [c.row() for c in results.checks()], "lrrl")


def measurements_table(results: Results) -> str:
    """Every variant, size and concurrency: requests, errors, p50, p95, throughput."""
    order = {variant: index for index, variant in enumerate(VARIANTS)}
    rows = []
    for m in sorted(results.measurements, key=lambda m: (m.size != SMALL, order[m.variant], m.clients)):
        rows.append(
            [
                m.variant,
                m.size,
                str(m.clients),
                str(m.completed),
                str(len(m.errors)),
                _ms(m.percentile_ms(50)),
                _ms(m.percentile_ms(95)),
                f"{m.throughput:.2f}" if not math.isnan(m.throughput) else "n/a",
            ]
        )
    header = ["variant", "image", "clients", "requests", "errors", "p50 ms", "p95 ms", "throughput req/s"]
    return table(header, rows, "llrrrrrr")


def memory_lines(name: str, memory: ProcessMemory) -> list[str]:
    """RSS of a gunicorn master and its workers, as markdown bullets."""
    workers = ", ".join(f"{mb:.0f} MB (pid {pid})" for pid, mb in sorted(memory.workers_mb.items()))
    loaded = [pid for pid, yes in memory.workers_load_tensorflow.items() if yes]
    return [
        f"- {name}: master {memory.master_mb:.0f} MB; workers {workers}; workers' sum "
        f"{memory.total_workers_mb:.0f} MB (shared pages counted in each); TensorFlow mapped in "
        f"{len(loaded)} of {len(memory.workers_mb)} workers.",
    ]


def markdown(results: Results, chart_name: str) -> str:
    """The whole ``results.md``."""
    parts = ["# `make bench` results", ""]
    if results.quick:
        parts += ["**Quick run (`--quick`): a few requests per measurement, the numbers mean nothing.**", ""]
    parts += ["Written by `python -m bench`. Every ratio compares numbers measured in this same run.", ""]
    parts += ["## Machine", "", table(["", ""], [[key, value] for key, value in results.machine.items()]), ""]
    parts += ["## Method", "", *[f"- {line}" for line in results.method], ""]
    parts += ["## Targets", "", checks_table(results), ""]
    parts += ["## Latency and throughput", "", measurements_table(results), "", f"![p50 latency]({chart_name})", ""]
    errors = [(m, error) for m in results.measurements for error in m.errors[:1]]
    if errors:
        parts += ["Errors (first of each measurement):", ""]
        parts += [f"- {m.variant} {m.size} {m.clients} clients: {error}" for m, error in errors]
        parts += [""]
    parts += ["## Memory (RSS after the load)", ""]
    parts += memory_lines("proxy, after the load", results.proxy_memory)
    parts += memory_lines("proxy, idle after start (for comparison)", results.proxy_memory_idle)
    parts += [*memory_lines("old way, after the load", results.old_way_memory), ""]
    parts += ["## Cold start", ""]
    runs = ", ".join(f"{s:.2f} s" for s in results.cold_starts_s)
    parts += [
        f"From spawning `python -m proxy` (serving mode) to the first 200 on `/healthz`: {runs}; "
        f"median {results.cold_start_s:.2f} s (files in the page cache).",
        "",
    ]
    parts += ["## Answers", ""]
    parts += [f"The same picture through each variant, `/classify` counts at threshold {results.threshold}:", ""]
    rows = [
        [size, *[_json(answer.get(variant)) for variant in VARIANTS], "yes" if answer.get("agree") else "no"]
        for size, answer in results.answers.items()
    ]
    parts += [table(["image", *VARIANTS, "all equal"], rows), ""]
    return "\n".join(parts)


def _json(value: Any) -> str:
    if value is None:
        return "n/a"
    return "`" + ", ".join(f"{key}: {count}" for key, count in sorted(value.items())) + "`" if value else "`{}`"


def chart(results: Results, path: Path) -> None:
    """p50 latency by concurrency, one panel per image size, one line per variant, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [SMALL, LARGE]
    figure, axes = plt.subplots(1, len(sizes), figsize=(11, 4.5), sharey=True)
    styles = {FLOOR: ("tab:green", "o"), PROXY: ("tab:blue", "s"), OLD_WAY: ("tab:red", "^")}
    for axis, size in zip(axes, sizes, strict=True):
        for variant in VARIANTS:
            points = sorted(
                (m.clients, m.percentile_ms(50))
                for m in results.measurements
                if m.variant == variant and m.size == size and m.completed
            )
            if points:
                colour, marker = styles[variant]
                axis.plot([c for c, _ in points], [p for _, p in points], marker=marker, color=colour, label=variant)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks([1, 8, 32], labels=["1", "8", "32"])
        axis.set_xlabel("concurrent clients")
        axis.set_title(f"{size} JPEG")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency (ms, log scale)")
    axes[0].legend()
    title = f"POST /classify p50 latency — {results.machine['CPU']}, {results.machine['cores']} cores"
    figure.suptitle(title + (" (quick run)" if results.quick else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: Results, out: Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    chart_path = out / "results.png"
    chart(results, chart_path)
    markdown_path = out / "results.md"
    markdown_path.write_text(markdown(results, chart_path.name), encoding="utf-8")
    return markdown_path, chart_path

"""The bench's CPU meters: what a round used, read from ``/proc``, and its sinks' arithmetic; and what marks the
code measured as changed."""

from __future__ import annotations

import os
import time

import pytest

from bench.__main__ import _cpu_meter, _per_request, _summed
from bench.load import Measurement, Round


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_meter_gives_its_sink_the_cpu_a_round_used() -> None:
    """This process burns 0.2 s of CPU inside the meter: the sink gets about that (10 ms ticks), and is given the
    measurement the round belongs to."""
    given: list[tuple[float, Measurement]] = []
    measurement = Measurement("section", "variant", 1)
    with _cpu_meter(lambda: [os.getpid()], lambda used, seen: given.append((used, seen)))(measurement):
        _burn(0.2)
    assert len(given) == 1
    used, seen = given[0]
    assert seen is measurement
    assert 0.18 <= used <= 0.4


def test_summed_adds_rounds_and_per_request_divides_by_every_request_sent() -> None:
    """Two rounds add up under their key; a round of 3 answers and 1 failure is 4 requests sent; a measurement
    without a round is NaN, not a division by zero."""
    totals: dict[str, float] = {}
    sink = _summed(totals, "workers")
    sink(0.5, Measurement("s", "v", 1))
    sink(0.25, Measurement("s", "v", 1))
    assert totals == {"workers": 0.75}

    per: list[float] = []
    measurement = Measurement("s", "v", 1, [Round([0.01, 0.01, 0.01], ["timeout"])])
    _per_request(per)(0.02, measurement)
    assert per == [pytest.approx(5.0)]
    _per_request(per)(0.02, Measurement("s", "v", 1))
    assert per[1] != per[1]  # NaN


def test_a_runs_own_outputs_do_not_mark_the_code_changed() -> None:
    """What a run writes into bench/ (results, the pictures it sends) is not a change to the code it measures;
    anything else in bench/, or those names elsewhere, is."""
    from bench.report import _written

    assert all(_written(p) for p in ("bench/results.md", "bench/results.png", "bench/image-4000x3000.jpg"))
    assert not any(_written(p) for p in ("bench/report.py", "bench/results.py", "proxy/results.md", "results.md"))

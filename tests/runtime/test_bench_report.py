"""The bench report (table, JSON numbers, PNG) from a measured result: derived columns are
computed from the samples and the measured bandwidth, and a failed row is shown with its
error instead of numbers. Built from synthetic timings, so it runs without a GPU."""

from __future__ import annotations

import pytest

from tilewarp.pipeline.config import step_bytes
from tilewarp.pipeline.presets import preset
from tilewarp.runtime.bench import BenchPlan, RowResult, _plan_dict, format_table
from tilewarp.runtime.bench_timing import StepTimes


def _result() -> dict:
    cfg, bw = preset("mimo-mini"), 3.0e12
    floor = step_bytes(cfg, 1, 4096).total
    ok = RowResult("graph", 1, "ok", "one CUDA graph per step, replayed", floor, 2.0e9, bw,
                   StepTimes((1.0, 2.0, 3.0, 4.0, 5.0), 5))
    bad = RowResult("megakernel", 1, "error", "DeviceTimeoutError: event 7 never reached 3", floor, None, bw)
    return {"mode": "measured", "preset": cfg.name, "device": "test GPU", "torch": "x", "cuda": "y",
            "bandwidth": {"GB_per_s": bw / 1e9, "bytes_per_s": bw, "source": "measured: test"},
            "plan": _plan_dict(BenchPlan("mimo-mini", rows=("graph", "megakernel"), tokens=(1,))),
            "rows": [ok.as_dict(), bad.as_dict()]}


def test_row_numbers_come_from_the_samples_and_the_measured_bandwidth():
    graph, mk = _result()["rows"]
    assert (graph["ms_median"], graph["ms_p10"], graph["ms_p90"]) == pytest.approx((3.0, 1.4, 4.6))
    assert graph["tokens_per_s"] == pytest.approx(1 / 3e-3)
    floor_ms = step_bytes(preset("mimo-mini"), 1, 4096).total / 3.0e12 * 1e3
    assert graph["floor_ms"] == pytest.approx(floor_ms) and graph["pct_of_floor"] == pytest.approx(100 * floor_ms / 3)
    assert graph["impl_GB_per_s"] == pytest.approx(2.0e9 / 3e-3 / 1e9)
    assert mk["status"] == "error" and "ms_median" not in mk


def test_table_shows_numbers_and_the_failed_rows_error():
    text = format_table(_result())
    graph_line = next(line for line in text.splitlines() if "PyTorch + CUDA graph" in line)
    assert "3.000" in graph_line and "333" in graph_line
    mk_line = next(line for line in text.splitlines() if "tilewarp megakernel" in line)
    assert "ERROR: DeviceTimeoutError: event 7" in mk_line
    assert "3000 GB/s (measured: test)" in text


def test_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from tilewarp.runtime.bench_chart import write_png
    path = tmp_path / "bench.png"
    write_png(_result(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

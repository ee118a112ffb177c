"""`tilewarp graph`: the summary it prints and writes agrees with the graph, schedule and
program it describes; the Graphviz file has one node per sync group; bad requests are
reported as errors, not tracebacks."""

from __future__ import annotations

import json
import re

import pytest

from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import MAX_WAITS, DeviceModel, schedule
from tilewarp.runtime.cli import main

TINY = ["graph", "--preset", "tiny", "--capacity", "256"]


def test_graph_prints_task_counts_events_waits_arena_and_cost_model(capsys):
    assert main(TINY + ["--step", "verify", "--tokens", "8", "--workers", "16"]) == 0
    out = capsys.readouterr().out
    g = build_step(preset("tiny"), 8, kind="verify", capacity=256)
    assert f"tasks: {len(g.tasks)}" in out
    for op, n in g.summary().items():
        assert re.search(rf"^\s+{op}\s+{n}$", out, re.M), op
    s = schedule(g, DeviceModel(workers=16))
    assert f"events (sync groups): {len(s.group_names)}" in out
    assert f"waits per task: max {max(len(w) for w in s.waits)}," in out
    assert f"arena: {s.arena_words} words" in out
    for key in ("bytes per worker: max", "step byte floor", "critical path", "makespan"):
        assert key in out


def test_graph_json_has_the_summary_and_one_entry_per_task(tmp_path, capsys):
    path = tmp_path / "g.json"
    assert main(TINY + ["--step", "decode", "--workers", "5", "--json", str(path)]) == 0
    d = json.loads(path.read_text())
    g = build_step(preset("tiny"), 1, kind="decode", capacity=256)
    s = schedule(g, DeviceModel(workers=5))
    assert d["tasks"] == len(d["per_task"]) == len(g.tasks) and d["tasks_per_op"] == g.summary()
    assert (d["preset"], d["step"], d["tokens"], d["capacity"], d["workers"]) == ("tiny", "decode", 1, 256, 5)
    assert d["events"] == len(s.group_names) == len(d["groups"])
    assert d["arena_words"] == s.arena_words
    assert d["critical_path_s"] <= d["makespan_s"] and d["step_bytes_floor"] > 0
    wb = d["worker_bytes"]
    assert wb["min"] <= wb["mean"] <= wb["max"]
    assert d["graph_bytes"] == pytest.approx(sum(t.cost.bytes for t in g.tasks))
    for t, entry in enumerate(d["per_task"]):
        assert entry["op"] == g.tasks[t].op.name and entry["stage"] == g.tasks[t].stage
        assert entry["worker"] == s.worker_of[t] and 0 <= entry["worker"] < 5
        assert [tuple(w) for w in entry["waits"]] == s.waits[t] and len(entry["waits"]) <= MAX_WAITS
    assert d["waits_max"] == max(len(e["waits"]) for e in d["per_task"])


def test_graph_dot_has_one_node_per_sync_group_and_an_edge_per_distinct_wait(tmp_path, capsys):
    path = tmp_path / "g.dot"
    assert main(TINY + ["--step", "decode", "--dot", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("digraph groups {") and text.rstrip().endswith("}")
    s = schedule(build_step(preset("tiny"), 1, kind="decode", capacity=256))
    nodes = re.findall(r"^  g(\d+) \[label=", text, re.M)
    assert sorted(map(int, nodes)) == list(range(len(s.group_names)))
    edges = set(re.findall(r"^  g(\d+) -> g(\d+)( \[style=dashed\])?;", text, re.M))
    want = {(str(g), str(s.group_of[t]), " [style=dashed]" if d else "") for t, w in enumerate(s.waits)
            for g, d in w}
    assert edges == want and any(e[2] for e in edges), "decode has loop-carried (dashed) waits"


def test_graph_validate_reports_ok(capsys):
    assert main(TINY + ["--step", "verify", "--validate"]) == 0
    assert "validation: ok" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [(["--step", "decode", "--tokens", "2"], "decode step has 1 token"),
                                           (["--step", "verify", "--tokens", "17"], "1..16 tokens"),
                                           (["--workers", "0"], "--workers must be at least 1")])
def test_graph_reports_impossible_steps_as_errors(capsys, extra, message):
    assert main(TINY + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error:") and message in err


def test_graph_refuses_an_unknown_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["graph", "--preset", "nope"])
    assert e.value.code == 2

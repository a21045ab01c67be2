"""The front's metrics, without a core: a status answer in, Prometheus text out, read back
by prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from supervisor.mcp.metrics import OTHER, Metrics, core_families
from supervisor.rules.states import INSTALLING, State

STATUS: dict[str, Any] = {
    "supervisor": {
        "pid": 1,
        "uptime": 12.5,
        "rss": 26_000_000,
        "cpu_seconds": 1.25,
        "mcp_front": {"name": "mcp-front", "restarts": 2},
    },
    "extensions": [
        {
            "name": "weather",
            "state": "running",
            "restarts": 3,
            "start_duration": 0.25,
            "crashes": {"signal": 2, "health": 1},
            "usage": {"rss": 1000, "cpu": 0.5, "cpu_seconds": 4.5, "processes": 2},
        },
        {"name": "backup", "state": "backoff", "restarts": 1, "usage": None},
        {"name": "broken", "state": "failed", "reason": "invalid entry"},  # a bad config row
    ],
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def render(status: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(Metrics().render(status).decode())


def test_extension_metrics_of_a_status_answer() -> None:
    got = render(STATUS)
    w = (("extension", "weather"),)
    assert got["spctl_extension_up", w] == 1.0
    assert got["spctl_extension_up", (("extension", "backup"),)] == 0.0
    assert got["spctl_extension_restarts_total", w] == 3
    assert got["spctl_extension_memory_bytes", w] == 1000
    assert got["spctl_extension_cpu_seconds_total", w] == 4.5
    assert got["spctl_extension_processes", w] == 2
    assert got["spctl_extension_start_duration_seconds", w] == 0.25
    crashes = {
        dict(labels)["reason"]: value
        for (metric, labels), value in got.items()
        if metric == "spctl_extension_crashes_total" and dict(labels)["extension"] == "weather"
    }
    assert crashes == {"exit": 0, "signal": 2, "limit": 0, "health": 1, "load": 0}
    assert got["spctl_supervisor_memory_bytes", ()] == 26_000_000
    assert got["spctl_supervisor_cpu_seconds_total", ()] == 1.25
    assert got["spctl_supervisor_uptime_seconds", ()] == 12.5
    assert got["spctl_front_restarts_total", ()] == 2


def test_state_is_one_hot_over_every_state() -> None:
    got = render(STATUS)
    for name, now in (("weather", "running"), ("backup", "backoff"), ("broken", "failed")):
        row = {
            dict(labels)["state"]: value
            for (metric, labels), value in got.items()
            if metric == "spctl_extension_state" and dict(labels)["extension"] == name
        }
        assert row == {**{s.value: float(s.value == now) for s in State}, INSTALLING: 0.0}


def test_installing_is_a_state_of_the_one_hot() -> None:
    """A worker whose environment is being built shows as ``installing`` (a phase of
    starting): its one-hot row says so instead of reading 0 everywhere."""
    status = {"supervisor": {}, "extensions": [{"name": "time", "state": INSTALLING}]}
    got = render(status)
    row = {
        dict(labels)["state"]: value
        for (metric, labels), value in got.items()
        if metric == "spctl_extension_state"
    }
    assert row[INSTALLING] == 1.0
    assert sum(row.values()) == 1.0


def test_what_the_answer_lacks_is_left_out_not_zero() -> None:
    got = render(STATUS)
    for metric in ("spctl_extension_memory_bytes", "spctl_extension_processes"):
        assert (metric, (("extension", "backup"),)) not in got
    assert ("spctl_extension_restarts_total", (("extension", "broken"),)) not in got
    bare = render({"supervisor": {}, "extensions": []})
    assert not any(m.startswith("spctl_supervisor") for m, _ in bare)


def test_malformed_rows_are_skipped() -> None:
    status = {"extensions": [None, {"state": "running"}, {"name": "x", "restarts": "many"}]}
    names = {labels for m, labels in render(status) if m == "spctl_extension_up"}
    assert names == {(("extension", "x"),)}


def test_the_core_answer_is_held_only_for_one_render() -> None:
    metrics = Metrics()
    metrics.render(STATUS)
    again = samples(metrics.render({"extensions": []}).decode())
    assert not any(m.startswith("spctl_extension") for m, _ in again)


def test_operations_histogram_and_in_flight() -> None:
    metrics = Metrics()
    ops = metrics.operations
    ops.begin("tools/call")
    ops.begin("tools/call")
    mid = samples(metrics.render({}).decode())
    assert mid["mcp_server_operations_in_flight", (("mcp_method_name", "tools/call"),)] == 2
    ops.end("tools/call", "echo", "", "weather", 0.015)
    ops.end("tools/call", OTHER, "-32602", "weather", 0.001)
    got = samples(metrics.render({}).decode())
    assert got["mcp_server_operations_in_flight", (("mcp_method_name", "tools/call"),)] == 0
    labels = {
        "mcp_method_name": "tools/call",
        "gen_ai_tool_name": "echo",
        "error_type": "",
        "extension": "weather",
    }
    key = tuple(sorted(labels.items()))
    assert got["mcp_server_operation_duration_seconds_count", key] == 1
    assert got["mcp_server_operation_duration_seconds_sum", key] == 0.015
    le = tuple(sorted({**labels, "le": "0.02"}.items()))
    assert got["mcp_server_operation_duration_seconds_bucket", le] == 1
    le = tuple(sorted({**labels, "le": "0.01"}.items()))
    assert got["mcp_server_operation_duration_seconds_bucket", le] == 0


def test_core_families_is_pure() -> None:
    first = [(f.name, f.samples) for f in core_families(STATUS)]
    assert first == [(f.name, f.samples) for f in core_families(STATUS)]
    assert [name for name, _ in first][:6] == [
        "spctl_extension_up",
        "spctl_extension_state",
        "spctl_extension_restarts",
        "spctl_extension_memory_bytes",
        "spctl_extension_cpu_seconds",
        "spctl_extension_processes",
    ]
    assert [name for name, _ in first][6] == "spctl_extension_start_duration_seconds"


def test_retain_drops_the_series_of_tools_no_longer_listed() -> None:
    metrics = Metrics()
    ops = metrics.operations
    for tool, ext in (("echo", "a"), ("gone", "a"), (OTHER, "a"), ("", "b")):
        method = "tools/call" if tool else "resources/read"
        ops.begin(method)
        ops.end(method, tool, "", ext, 0.001)
    ops.retain(lambda ext, tool: (ext, tool) == ("a", "echo"))
    tools = {
        dict(labels)["gen_ai_tool_name"]
        for (metric, labels) in samples(metrics.render({}).decode())
        if metric == "mcp_server_operation_duration_seconds_count"
    }
    assert tools == {"echo", OTHER, ""}  # 'other' and non-tool methods are never dropped
    ops.begin("tools/call")
    ops.end("tools/call", "gone", "", "a", 0.001)  # listed again later: a new series
    counts = samples(metrics.render({}).decode())
    assert any(dict(labels).get("gen_ai_tool_name") == "gone" for _, labels in counts)


def _reference(status: dict[str, Any]) -> bytes:
    """prometheus-client's own exposition of the core's families (what render must equal)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector

    class Core(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return core_families(status)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Core())
    return generate_latest(registry)


def test_the_core_families_render_as_prometheus_client_renders_them() -> None:
    """The core's families are written by a faster writer than generate_latest (a scrape of
    100 extensions spent ~20 ms in it): byte for byte the same text, odd names included."""
    from supervisor.mcp.metrics import core_text

    odd = {"name": 'we"ird\\na\nme-é', "state": "running", "restarts": 1e21, "usage": {"rss": 0.5}}
    big = {
        "supervisor": STATUS["supervisor"],
        "extensions": [*STATUS["extensions"], odd]
        + [{**STATUS["extensions"][0], "name": f"ext{i}"} for i in range(50)],
    }
    for status in (STATUS, big, {"supervisor": {}, "extensions": []}):
        assert core_text(status).encode() == _reference(status)

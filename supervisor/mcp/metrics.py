"""The front's ``/metrics``: Prometheus text through prometheus-client.

Theory of operation: two kinds of numbers, one registry.

- What the core knows (states, restarts, memory, CPU of every extension, the supervisor's
  own) is never kept in the front: each scrape asks the core for ``status`` over the control
  socket and :func:`core_families` turns that one answer into metric families, written out
  by :func:`core_text` (the same text as prometheus-client's ``generate_latest``, faster);
  nothing of the answer is kept after the scrape.
- What only the front sees (every MCP operation it forwards) is kept here, by
  :class:`Operations`: the ``mcp_server_operation_duration_seconds`` histogram with the
  OpenTelemetry MCP semantic-convention labels, and the operations in flight.

Cardinality is bounded by construction: ``gen_ai_tool_name`` is a tool of the catalog the
call was routed by (anything else is ``other``), ``extension`` a configured MCP server,
``mcp_method_name`` one of the four forwarded methods, ``error_type`` a JSON-RPC error code,
``tool_error``, ``cancelled`` or an exception's class name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from supervisor.rules.exits import CRASH_REASONS
from supervisor.rules.states import INSTALLING, State

__all__ = ["CONTENT_TYPE", "OTHER", "Metrics", "Operations", "core_families", "core_text"]

# The classic text format's type, which every Prometheus (and scraper) accepts; the body is
# that format, since every name here is a legacy one.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER = "other"  # the tool label of a name not in the catalog

# The OpenTelemetry MCP semantic conventions' advice for mcp.server.operation.duration.
BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_LABELS = ("mcp_method_name", "gen_ai_tool_name", "error_type", "extension")
# ``installing`` is what status says of a worker starting while its environment is built.
STATES = (*(s.value for s in State), INSTALLING)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def core_families(status: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of one ``status`` answer of the core (pure: data in, data out).

    A value the answer lacks (no usage for a stopped worker, no RSS where /proc is missing)
    is left out, never reported as 0.
    """
    exts = [e for e in status.get("extensions") or () if isinstance(e, Mapping) and e.get("name")]
    up = GaugeMetricFamily(
        "spctl_extension_up", "1 when the extension's worker is running", labels=["extension"]
    )
    state = GaugeMetricFamily(
        "spctl_extension_state",
        "The extension's state, one-hot over every state",
        labels=["extension", "state"],
    )
    restarts = CounterMetricFamily(
        "spctl_extension_restarts",
        "Restarts after a crash since the supervisor started",
        labels=["extension"],
    )
    memory = GaugeMetricFamily(
        "spctl_extension_memory_bytes",
        "RSS of the worker's whole process tree",
        labels=["extension"],
    )
    cpu = CounterMetricFamily(
        "spctl_extension_cpu_seconds",
        "CPU time of the worker's process tree since the worker started",
        labels=["extension"],
    )
    procs = GaugeMetricFamily(
        "spctl_extension_processes",
        "Processes in the worker's tree",
        labels=["extension"],
    )
    crashes = CounterMetricFamily(
        "spctl_extension_crashes",
        "Crashes since the supervisor started, by reason (exit, signal, limit, health, load)",
        labels=["extension", "reason"],
    )
    start = GaugeMetricFamily(
        "spctl_extension_start_duration_seconds",
        "How long the last start took, from starting to running",
        labels=["extension"],
    )
    for ext in exts:
        name = str(ext["name"])
        now = ext.get("state")
        up.add_metric([name], 1.0 if now == State.RUNNING.value else 0.0)
        for s in STATES:
            state.add_metric([name, s], 1.0 if now == s else 0.0)
        if (n := _number(ext.get("restarts"))) is not None:
            restarts.add_metric([name], n)
        counted = ext.get("crashes")
        if isinstance(counted, Mapping):
            for reason in CRASH_REASONS:
                crashes.add_metric([name, reason], _number(counted.get(reason)) or 0.0)
        if (n := _number(ext.get("start_duration"))) is not None:
            start.add_metric([name], n)
        usage = ext.get("usage")
        if isinstance(usage, Mapping):
            for family, key in ((memory, "rss"), (cpu, "cpu_seconds"), (procs, "processes")):
                if (n := _number(usage.get(key))) is not None:
                    family.add_metric([name], n)
    yield from (up, state, restarts, memory, cpu, procs, start, crashes)
    yield from _supervisor_families(status.get("supervisor"))


def _supervisor_families(about: Any) -> Iterable[Metric]:
    if not isinstance(about, Mapping):
        return
    plain = (
        ("spctl_supervisor_uptime_seconds", "uptime", "Seconds since the supervisor started"),
        ("spctl_supervisor_memory_bytes", "rss", "RSS of the supervisor core"),
    )
    for metric, key, text in plain:
        if (n := _number(about.get(key))) is not None:
            yield GaugeMetricFamily(metric, text, value=n)
    if (n := _number(about.get("cpu_seconds"))) is not None:
        yield CounterMetricFamily("spctl_supervisor_cpu_seconds", "CPU time of the core", value=n)
    front = about.get("mcp_front")
    if isinstance(front, Mapping) and (n := _number(front.get("restarts"))) is not None:
        yield CounterMetricFamily(
            "spctl_front_restarts", "Restarts of the MCP front after a crash", value=n
        )


def core_text(status: Mapping[str, Any]) -> str:
    """The text exposition of :func:`core_families`, exactly as ``generate_latest`` writes it
    (a unit test compares them byte for byte), but ~3× faster: those are ~1,800 samples with
    100 extensions, and ``generate_latest`` re-validates every label name of every sample.
    What it relies on holds by construction: gauges and counters only, legacy metric and
    label names, no timestamps, no ``_created`` samples."""
    out: list[str] = []
    for family in core_families(status):
        name = family.name + "_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            value: str = floatToGoString(sample.value)  # type: ignore[no-untyped-call]
            if not sample.labels:
                out.append(f"{sample.name} {value}\n")
                continue
            labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(sample.labels.items()))
            out.append(f"{sample.name}{{{labels}}} {value}\n")
    return "".join(out)


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


class Operations:
    """What the front measures of the MCP operations it forwards (the hot path: a dict
    lookup, a clock read and an ``observe`` per call)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "mcp_server_operation_duration_seconds",
            "Duration of MCP requests the front forwarded, to the answer or error",
            _LABELS,
            registry=registry,
            buckets=BUCKETS,
        )
        self.in_flight = Gauge(
            "mcp_server_operations_in_flight",
            "MCP requests the front is forwarding now",
            ["mcp_method_name"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, str, str], Any] = {}
        self._gauges: dict[str, Any] = {}

    def retain(self, listed: Callable[[str, str], bool]) -> None:
        """Drop the series of tools no longer listed (``listed(extension, tool)`` false), so
        the label set follows the catalog instead of growing with every tool ever seen."""
        for key in [k for k in self._children if k[1] not in ("", OTHER)]:
            if not listed(key[3], key[1]):
                del self._children[key]
                self.duration.remove(*key)

    def begin(self, method: str) -> None:
        gauge = self._gauges.get(method)
        if gauge is None:
            gauge = self._gauges[method] = self.in_flight.labels(method)
        gauge.inc()

    def end(self, method: str, tool: str, error: str, extension: str, seconds: float) -> None:
        """One operation ``begin(method)`` announced has ended after ``seconds``."""
        self._gauges[method].dec()
        key = (method, tool, error, extension)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(*key)
        child.observe(seconds)


class Metrics:
    """The front's registry: its operations, its own process, and the core's numbers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.operations = Operations(self.registry)
        ProcessCollector(namespace="spctl_front", registry=self.registry)

    def render(self, status: Mapping[str, Any]) -> bytes:
        """The text exposition with ``status`` (the core's answer of this scrape): the
        front's own families through ``generate_latest``, then the core's (:func:`core_text`)."""
        return generate_latest(self.registry) + core_text(status).encode()

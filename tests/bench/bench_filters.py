"""Per-server filters (``tools:``/``prompts:``/``resources:``): what they cost a ``tools/call``.

One supervisor serves the ``mcp_echo`` fixture twice: ``plain`` with no filters and ``filtered``
with an allow-list and a deny-list on all three kinds (8 globs, ``echo`` allowed). The official
SDK client calls ``echo`` on each through the aggregate ``/mcp``, the two alternating call by
call (so the load of other processes on a shared box falls on both alike), in both eras:
sequential p50/p99. The filter is checked once per call in the core (a compiled expression per
glob list), and listing applies it once per catalog change, so the goal is "within noise".
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from statistics import median

import anyio

from tests.bench._table import print_table
from tests.bench.bench_mcp import MODES, Target, compare, ms, p99, spctl
from tests.helpers import server_entry

__all__ = ["main"]

FILTERS = {
    "tools": {"allow": ["e*", "add", "s*", "progress"], "deny": ["sync_*", "boom"]},
    "prompts": {"allow": ["g*"], "deny": ["x*"]},
    "resources": {"deny": ["secret://*"]},
}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spctl-bench-filters-") as tmp:
        servers = [
            server_entry("plain", "mcp_echo"),
            server_entry("filtered", "mcp_echo", **FILTERS),
        ]
        rows = []
        with spctl(Path(tmp), servers) as url:
            for mode in MODES:
                off = Target("off", url, "plain__echo")
                on = Target("on", url, "filtered__echo")
                anyio.run(compare, [off, on], mode)
                a50, b50 = median(on.latencies), median(off.latencies)
                rows.append([mode, "p50", ms(b50), ms(a50), f"{a50 / b50:.2f}×"])
                rows.append([mode, "p99", ms(p99(off.latencies)), ms(p99(on.latencies)), ""])
    print_table(
        "tools/call through /mcp: filters off vs on (same supervisor, alternating)",
        ["era", "", "filters off", "filters on", "on/off"],
        rows,
    )


if __name__ == "__main__":
    main()

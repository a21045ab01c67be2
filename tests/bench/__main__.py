"""Run the benchmarks: ``python -m tests.bench [name ...]`` from the repository root.

Every ``bench_*.py`` module beside this file is imported and its ``main()`` called, in name
order; names on the command line (``rpc`` or ``bench_rpc``) pick a subset. At the end, the
goals the benchmarks checked (:mod:`tests.bench._goals`) are printed as one table.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from tests.bench import _goals


def _available() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    available = _available()
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in argv] or available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available)}")
        return 2
    for name in wanted:
        started = time.monotonic()
        importlib.import_module(f"{__package__}.{name}").main()
        print(f"({name}: {time.monotonic() - started:.1f} s)\n", flush=True)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    summary = _goals.table(f"Goals checked by this run ({len(wanted)} benchmarks, load {load})")
    if summary:
        print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

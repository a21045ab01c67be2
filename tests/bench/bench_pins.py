"""Integrity pins: the cost of the check before each start, against baselines of the same run.

* the digest of a generated 1,000-file package vs only reading the same files (os.walk + read);
* the whole check before a start (lock, digest, compare) and the lock's first parse;
* the start time of a pinned extension vs the same extension unpinned, with a real supervisor
  (``start_duration``, starting → running, of ``restart``s of each).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from supervisor.config import load_registry
from supervisor.install import integrity, pins
from supervisor.install.lockfile import read_lock
from tests.bench._table import print_table
from tests.helpers import FIXTURES, Serve, make_extensions, module_entry, wait_for

FILES = 1000
ROUNDS = 15
RESTARTS = 8


def _package(where: Path, files: int = FILES) -> Path:
    """A package of ``files`` files in 40 subpackages, 200 B – 8 KiB each (like a library)."""
    rng = random.Random(12)
    for i in range(files):
        sub = where / f"sub{i % 40}"
        sub.mkdir(parents=True, exist_ok=True)
        size = rng.randint(200, 8192)
        (sub / f"mod{i}.py").write_bytes(rng.randbytes(size // 2).hex().encode()[:size])
    (where / "__init__.py").touch()
    return where


def _read_all(top: Path) -> None:
    for directory, _, names in os.walk(top):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                f.read()


def _timed_ms(fn: Callable[[], object], rounds: int = ROUNDS) -> tuple[float, float]:
    """(median, fastest) of ``rounds`` calls, in ms, after one to warm the page cache."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, min(times) * 1000


def _ms(timed: tuple[float, float]) -> str:
    return f"{timed[0]:.1f} ms (min {timed[1]:.1f})"


def _digest_rows(tmp: Path) -> list[list[str]]:
    root = tmp / "digest" / "extensions"
    pkg = _package(root / "big")
    entry = "servers:\n  - name: big\n    type: local\n    path: ./big\n"
    (root / "servers.yaml").write_text(entry)
    ext = load_registry(root, environ={}).registry.extensions[0]
    pins.pin_extension(ext, root)
    read = _timed_ms(lambda: _read_all(pkg))
    digest = _timed_ms(lambda: pins.compute(pkg))
    check = _timed_ms(lambda: integrity.check(ext))
    parse = _timed_ms(lambda: read_lock(root))
    kib = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file()) // 1024
    return [
        [f"digest of {FILES} files ({kib} KiB)", _ms(digest), _ms(read) + " reading them",
         f"{digest[0] / read[0]:.2f}×", "≤ 20 ms"],
        ["check before a start (pinned, lock parsed)", _ms(check), _ms(read),
         f"{check[0] / read[0]:.2f}×", "≤ 20 ms"],
        [f"first parse of the lock ({FILES} records)", _ms(parse), "", "", ""],
    ]  # fmt: skip


def _start_rows(tmp: Path) -> list[list[str]]:
    base = tmp / "serve"
    entries = [module_entry(name, "ok_daemon") for name in ("plain", "pinned")]
    for entry in entries:
        entry["path"] = f"./modules/{entry['name']}"
    ext = make_extensions(base, entries)
    for name in ("plain", "pinned"):
        shutil.copytree(FIXTURES / "ok_daemon", ext / "modules" / name)
        _package(ext / "modules" / name / "data")
    registry = load_registry(ext, environ={}).registry
    pinned = registry.get("pinned")
    assert pinned is not None
    pins.pin_extension(pinned, ext)
    s = Serve(base, ext, base / "run" / "control.sock")
    s.start()
    results: dict[str, list[float]] = {"plain": [], "pinned": []}
    try:
        for name in results:
            s.wait_state(name, "running", 60)
        for _ in range(RESTARTS):
            for name, durations in results.items():
                s.call("restart", name, timeout=60)
                e = wait_for(lambda n=name: (x := s.ext(n))["state"] == "running" and x, 30)
                durations.append(e["start_duration"])
        assert s.ext("pinned")["integrity"] == "pinned"
    finally:
        s.stop()
    plain = statistics.median(results["plain"]) * 1000
    pin = statistics.median(results["pinned"]) * 1000
    return [
        [f"start → running, pinned ({FILES + 1} files)", f"{pin:.0f} ms",
         f"{plain:.0f} ms (unpinned)", f"{pin / plain:.2f}×", f"+{pin - plain:.0f} ms"],
    ]  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = _digest_rows(Path(tmp)) + _start_rows(Path(tmp))
    print_table(
        "Integrity pins (medians; min of 15)",
        ["measure", "spctl", "baseline (same run)", "ratio", "goal / cost"],
        rows,
    )

"""Building an extension's environment: ``spctl install`` (uv, from the lock) cold and from a
warm cache, against ``python -m venv`` + ``pip install`` of the same package, in the same run.

Each measured step starts from an empty state directory; "cold" also starts from an empty uv
cache (so it downloads everything), "warm" reuses the cache the cold run filled. pip uses its
own cache (``--no-cache-dir`` is not given: its warm figure is the fair comparison). The goal
(issue 12) is warm ≤ 0.3× pip. Also: the disk used by one environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.bench._table import print_table

PACKAGE = "mcp-server-time==2026.10.19"
SPCTL = str(Path(sys.executable).with_name("spctl"))
ROUNDS = 3


def _run(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {out.stderr.strip()[-500:]}")
    return took


def _du(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        base = Path(tmp)
        ext = base / "extensions"
        ext.mkdir()
        entry = {
            "name": "time",
            "type": "local",
            "install": f"pypi:{PACKAGE}",
            "command": ["mcp-server-time", "--local-timezone=UTC"],
        }
        (ext / "servers.yaml").write_text(yaml.safe_dump({"servers": [entry]}))
        env = {**os.environ, "UV_CACHE_DIR": str(base / "uv-cache")}
        try:
            _run([SPCTL, "lock", "time", "--extensions", str(ext)], env)
        except RuntimeError as exc:
            print(f"bench_install skipped: {exc}", flush=True)
            return
        rows: dict[str, list[float]] = {"spctl install, cold cache": [], "spctl install, warm": []}
        rows["python -m venv + pip install (pip's cache warm)"] = []
        size = 0
        for n in range(ROUNDS):
            shutil.rmtree(base / "uv-cache", ignore_errors=True)
            for label in ("spctl install, cold cache", "spctl install, warm"):
                state = base / f"state-{n}-{label[-4:]}"
                env_n = {**env, "STATE_DIRECTORY": str(state)}
                rows[label].append(_run([SPCTL, "install", "--extensions", str(ext)], env_n))
                (built,) = (state / "envs").iterdir()
                size = _du(built)
                shutil.rmtree(state)
            venv = base / f"pip-{n}"
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PACKAGE]
            started = time.monotonic()
            _run([sys.executable, "-m", "venv", str(venv)], env)
            _run([*pip, "--disable-pip-version-check"], env)
            rows["python -m venv + pip install (pip's cache warm)"].append(
                time.monotonic() - started
            )
            shutil.rmtree(venv)
        pip_median = sorted(rows["python -m venv + pip install (pip's cache warm)"])[ROUNDS // 2]
        table = []
        for label, times in rows.items():
            median = sorted(times)[ROUNDS // 2]
            table.append(
                [label, f"{median:.2f} s", f"{min(times):.2f} s", f"{median / pip_median:.2f}×"]
            )
        print_table(
            f"Building the {PACKAGE} environment (median of {ROUNDS}; env: {size / 2**20:.0f} "
            "MiB on disk)",
            ["how", "median", "best", "vs pip"],
            table,
        )


if __name__ == "__main__":
    main()

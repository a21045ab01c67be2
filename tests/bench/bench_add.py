"""``spctl add`` (resolve, lock, build the environment, write the entry) of a PyPI and an npm
server, from a cold and from a warm cache, against installing the same package the plain way
in the same run: ``python -m venv`` + ``pip install`` (pip's cache warm), and ``npm install``
in a temp directory (npm's cache warm). For npm also ``spctl install`` from the lock alone
(the env build a second machine does).

Each step starts from an empty extensions and state directory. "cold" starts from an empty uv /
npm cache (it downloads everything), "warm" reuses the cache the cold step filled. No
supervisor runs (the socket points nowhere), so ``add`` reloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench._table import print_table

PYPI = "mcp-server-time==2026.10.19"
NPM = "@modelcontextprotocol/server-everything@2026.8.31"
SPCTL = str(Path(sys.executable).with_name("spctl"))
ROUNDS = 3
_NPM_QUIET = ["--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.monotonic()
    out = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {out.stderr.strip()[-500:]}")
    return took


def _fresh(base: Path, label: str) -> tuple[Path, dict[str, str]]:
    """An empty extensions dir and the environment for one ``spctl`` step."""
    root = base / label
    shutil.rmtree(root, ignore_errors=True)
    (root / "extensions").mkdir(parents=True)
    (root / "extensions" / "servers.yaml").write_text("servers: []\n")
    env = {
        **os.environ,
        "STATE_DIRECTORY": str(root / "state"),
        "SPCTL_SOCKET": str(root / "no-supervisor.sock"),
    }
    return root, env


def _add(base: Path, label: str, source: str, cache: dict[str, str]) -> float:
    root, env = _fresh(base, label)
    argv = [SPCTL, "add", source, "--yes", "-e", str(root / "extensions")]
    took = _run(argv, {**env, **cache})
    shutil.rmtree(root)
    return took


def _pypi_round(base: Path, rows: dict[str, list[float]]) -> None:
    cache = {"UV_CACHE_DIR": str(base / "uv-cache")}
    shutil.rmtree(base / "uv-cache", ignore_errors=True)
    rows["pypi: spctl add, cold uv cache"].append(_add(base, "p-cold", f"pypi:{PYPI}", cache))
    rows["pypi: spctl add, warm"].append(_add(base, "p-warm", f"pypi:{PYPI}", cache))
    venv = base / "pip-venv"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], dict(os.environ))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PYPI]
    _run([*pip, "--disable-pip-version-check"], dict(os.environ))
    rows["pypi: python -m venv + pip install (pip's cache warm)"].append(time.monotonic() - started)
    shutil.rmtree(venv)


def _npm_round(base: Path, rows: dict[str, list[float]]) -> None:
    cache = {"NPM_CONFIG_CACHE": str(base / "npm-cache")}
    shutil.rmtree(base / "npm-cache", ignore_errors=True)
    rows["npm: spctl add, cold npm cache"].append(_add(base, "n-cold", f"npm:{NPM}", cache))
    rows["npm: spctl add, warm"].append(_add(base, "n-warm", f"npm:{NPM}", cache))
    # the env build alone, from the lock add wrote (what a second machine does)
    root, env = _fresh(base, "n-lock")
    _run([SPCTL, "add", f"npm:{NPM}", "--yes", "-e", str(root / "extensions")], {**env, **cache})
    shutil.rmtree(root / "state")
    argv = [SPCTL, "install", "--extensions", str(root / "extensions")]
    rows["npm: spctl install from the lock, warm"].append(_run(argv, {**env, **cache}))
    shutil.rmtree(root)
    plain = base / "npm-plain"
    shutil.rmtree(plain, ignore_errors=True)
    plain.mkdir()
    npm_env = {**os.environ, **cache}
    took = _run(["npm", "install", *_NPM_QUIET, NPM], npm_env, cwd=plain)
    rows["npm: npm install in a temp dir (npm's cache warm)"].append(took)
    shutil.rmtree(plain)


def _table(title: str, rows: dict[str, list[float]], baseline: str) -> None:
    base = sorted(rows[baseline])[ROUNDS // 2]
    table = []
    for label, times in rows.items():
        median = sorted(times)[ROUNDS // 2]
        table.append([label, f"{median:.2f} s", f"{min(times):.2f} s", f"{median / base:.2f}×"])
    print_table(title, ["how", "median", "best", "vs baseline"], table)


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-add-") as tmp:
        base = Path(tmp)
        pypi: dict[str, list[float]] = {
            "pypi: spctl add, cold uv cache": [],
            "pypi: spctl add, warm": [],
            "pypi: python -m venv + pip install (pip's cache warm)": [],
        }
        npm: dict[str, list[float]] = {
            "npm: spctl add, cold npm cache": [],
            "npm: spctl add, warm": [],
            "npm: spctl install from the lock, warm": [],
            "npm: npm install in a temp dir (npm's cache warm)": [],
        }
        try:
            for _ in range(ROUNDS):
                _pypi_round(base, pypi)
        except RuntimeError as exc:
            print(f"bench_add (pypi) skipped: {exc}", flush=True)
        else:
            _table(
                f"spctl add pypi:{PYPI} (median of {ROUNDS}; load {load:.1f})",
                pypi,
                "pypi: python -m venv + pip install (pip's cache warm)",
            )
        if shutil.which("npm") is None:
            print("bench_add (npm) skipped: npm not on PATH", flush=True)
            return
        try:
            for _ in range(ROUNDS):
                _npm_round(base, npm)
        except RuntimeError as exc:
            print(f"bench_add (npm) skipped: {exc}", flush=True)
            return
        _table(
            f"spctl add npm:{NPM} (median of {ROUNDS}; load {os.getloadavg()[0]:.1f})",
            npm,
            "npm: npm install in a temp dir (npm's cache warm)",
        )


if __name__ == "__main__":
    main()

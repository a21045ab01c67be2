"""OAuth 2 to remote MCP servers: what discovery and the user's tokens cost a worker's start,
and what a refresh costs a call.

One OAuth fixture (``tests/fixtures/oauth_server``: a protected MCP server and its
authorization servers, on 127.0.0.1) and one ``spctl serve`` hosting it four ways:

- ``tokenUrl`` — the client-credentials grant with ``tokenUrl`` given: the baseline (no
  discovery; what spctl did before discovery existed);
- ``discovered (401)`` — no ``tokenUrl``: the 401's ``resource_metadata``, then RFC 8414;
- ``discovered (well-known)`` — no ``tokenUrl``, a bare 401: the path-specific well-known URL;
- ``user tokens`` — ``grant: authorization_code``: the tokens ``spctl auth login`` stored (the
  bench plays the browser, headless), read from the state directory at start.

Per entry, :data:`ROUNDS` restarts interleaved entry by entry (the load of other processes on
a shared box falls on all alike): the wall time of ``spctl restart`` (until ``running``), the
worker's CPU to get there, the HTTP requests it sent to the fixture per start, and its RSS/USS.
Then ``tools/call`` through the front for the ``user tokens`` entry, :data:`CALLS` plain calls
and :data:`CALLS` calls whose access token the server has just forgotten (a 401, a refresh
with the token endpoint, the tokens written back, the call sent again), interleaved.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import httpx2
from mcp import Client

from tests.bench._table import print_table
from tests.bench.bench_mcp import ms, p99, serving
from tests.bench.bench_remote import cpu, memory
from tests.helpers import FIXTURES, SPCTL, HttpFixture, make_extensions, start_http_fixture

__all__ = ["main"]

SERVER = FIXTURES / "oauth_server" / "server.py"
SECRET = "bench-oauth-secret"
ROUNDS = 8
CALLS = 40


def entries(base: str) -> list[dict[str, Any]]:
    def one(name: str, mode: str, server: str, **auth: Any) -> dict[str, Any]:
        full = {"type": "oauth2", "clientId": "app", "clientSecret": "${BENCH_SECRET}", **auth}
        url = f"{base}/r/{mode}/{server}/mcp"
        return {"name": name, "type": "remote", "url": url, "auth": full}

    return [
        one("configured", "header", "post", tokenUrl=f"{base}/as/post/token"),
        one("prm-header", "header", "post"),
        one("prm-wellknown", "wellknown", "basic"),
        one("user", "header", "oidc", grant="authorization_code"),
    ]


LABELS = {
    "configured": "tokenUrl (baseline)",
    "prm-header": "discovered (401)",
    "prm-wellknown": "discovered (well-known)",
    "user": "user tokens",
}


def login(env: dict[str, str], ext: Path) -> None:
    """``spctl auth login user --no-browser``, the bench pasting the redirect."""
    argv = [SPCTL, "auth", "login", "user", "-e", str(ext), "--no-browser", "--timeout", "60"]
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    link = proc.stdout.readline().strip()
    location = httpx2.get(link, follow_redirects=False, timeout=10).headers["location"]
    _, err = proc.communicate(location + "\n", timeout=60)
    assert proc.returncode == 0, err


def hits(fixture: HttpFixture) -> int:
    return sum(fixture.stats()["hits"].values())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spctl-bench-oauth-") as tmp:
        root = Path(tmp)
        oauth = start_http_fixture(HttpFixture, SERVER, root, ["--secret", SECRET])
        os.environ["BENCH_SECRET"] = SECRET
        try:
            ext = make_extensions(root, [], entries(oauth.base))
            env = {**os.environ, "STATE_DIRECTORY": str(root / "state")}
            login(env, ext)  # before serve: the worker finds the tokens at its first start
            names = [e["name"] for e in entries(oauth.base)]

            def running(status: dict[str, Any]) -> bool:
                return all(e["state"] == "running" for e in status["extensions"])

            with serving(root, ext, running, "the oauth workers") as (s, front):
                walls: dict[str, list[float]] = {n: [] for n in names}
                cpus: dict[str, list[float]] = {n: [] for n in names}
                requests: dict[str, list[int]] = {n: [] for n in names}
                for i in range(ROUNDS):
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        before = hits(oauth)
                        t0 = time.perf_counter()
                        out = s.spctl("restart", name)
                        walls[name].append(time.perf_counter() - t0)
                        assert out.returncode == 0, out.stderr
                        pid = int(s.ext(name)["pid"])
                        cpus[name].append(cpu(pid))
                        requests[name].append(hits(oauth) - before - 1)  # not /stats itself
                mem = {n: memory(int(s.ext(n)["pid"])) for n in names}
                plain, refreshed = anyio.run(calls, f"{front}/user", oauth)
        finally:
            oauth.stop()
    base = median(walls["configured"])
    rows = [
        [
            LABELS[n],
            ms(median(walls[n])),
            f"{median(walls[n]) / base:.2f}×",
            ms(median(cpus[n])),
            f"{median(requests[n]):.0f}",
            "/".join(f"{x:.1f}" for x in mem[n][:2]),
        ]
        for n in names
    ]
    print_table(
        f"remote oauth2 worker start ({ROUNDS} restarts each, interleaved)",
        [
            "auth",
            "restart → running p50",
            "vs tokenUrl",
            "worker CPU p50",
            "HTTP requests / start",
            "RSS/USS MiB",
        ],
        rows,
    )
    print_table(
        f"tools/call through the front, user tokens ({CALLS} calls each, interleaved)",
        ["call", "p50", "p99", "vs plain"],
        [
            ["plain", ms(median(plain)), ms(p99(plain)), "1.00×"],
            [
                "after a 401: refresh + write back + resend",
                ms(median(refreshed)),
                ms(p99(refreshed)),
                f"{median(refreshed) / median(plain):.2f}×",
            ],
        ],
    )


async def calls(url: str, oauth: HttpFixture) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    refreshed: list[float] = []
    async with Client(url) as c, httpx2.AsyncClient(timeout=10) as control:
        for _ in range(3):
            await c.call_tool("echo", {"text": "warm"})
        for i in range(2 * CALLS):
            forget = i % 2 == 1
            if forget:
                await control.post(f"{oauth.base}/control", json={"forget": True})
            t0 = time.perf_counter()
            result = await c.call_tool("echo", {"text": f"call {i}"})
            (refreshed if forget else plain).append(time.perf_counter() - t0)
            assert not result.is_error, result
    return plain, refreshed


if __name__ == "__main__":
    main()

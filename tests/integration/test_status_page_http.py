"""The status page's HTTP side on a real front and core (no browser: tests/e2e has that).

Without ``--token-file`` the front makes an action token and writes it 0600 to
``--page-token``; with one, that token is the action token, the page shell loads without it and
everything else keeps the guard. ``--no-status-page`` serves none of it.
"""

from __future__ import annotations

import http.client
import json
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_mcp_front import Front, start_front
from tests.helpers import Serve, make_extensions, module_entry


@dataclass
class Env:
    serve: Serve
    open: Front  # no --token-file: a generated action token
    guarded: Front  # --token-file
    off: Front  # --no-status-page
    page_token: Path
    token: str


def request(
    front: Front, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=60)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("page-http")
    serve = Serve(
        root, make_extensions(root, [module_entry("daemon", "ok_daemon")], []), root / "c.sock"
    )
    token = root / "token"
    token.write_text("page-test-token\n")
    token.chmod(0o600)
    stale = root / "stale-page-token"
    stale.write_text("from an earlier run\n")
    fronts: list[Front] = []
    try:
        serve.start()
        serve.wait_state("daemon", "running")
        page_token = root / "state" / "page-token"
        argvs = [
            ("f1.log", "--page-token", str(page_token)),
            ("f2.log", "--token-file", str(token), "--page-token", str(stale)),
            ("f3.log", "--no-status-page"),
        ]
        with ThreadPoolExecutor(3) as pool:  # each imports the SDK: start them side by side
            started = [pool.submit(start_front, serve.socket, root / a[0], *a[1:]) for a in argvs]
            fronts += [f.result() for f in started]
        assert not stale.exists()  # a stale generated token is not left to mislead spctl page
        yield Env(serve, *fronts, page_token, page_token.read_text().strip())
    finally:
        for f in fronts:
            f.stop()
        serve.stop()


def test_the_generated_token_is_private_and_random(env: Env) -> None:
    mode = stat.S_IMODE(env.page_token.stat().st_mode)
    assert mode == 0o600
    assert len(env.token) >= 40


def test_the_shell_is_served_with_a_strict_policy(env: Env) -> None:
    for path, kind in (("/", "text/html"), ("/static/page.js", "text/javascript")):
        status, headers, body = request(env.open, "GET", path)
        assert status == 200, body
        assert headers["content-type"].startswith(kind)
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert request(env.open, "GET", "/static/nope.js")[0] == 404


def test_status_says_whether_actions_are_allowed(env: Env) -> None:
    status, _, body = request(env.open, "GET", "/api/status")
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    assert data["actions"] is False
    assert [e["name"] for e in data["status"]["extensions"]] == ["daemon"]
    assert "daemon" in data["history"]["series"]
    assert data["history"]["supervisor"]["rss"]  # the supervisor's own series
    _, _, body = request(env.open, "GET", "/api/status", bearer(env.token))
    assert json.loads(body)["actions"] is True
    _, _, body = request(env.open, "GET", "/api/status", bearer("wrong"))
    assert json.loads(body)["actions"] is False


def test_actions_need_the_token(env: Env) -> None:
    before = env.serve.wait_state("daemon", "running")
    url = "/api/extensions/daemon/restart"
    for headers in ({}, bearer("wrong"), {"Cookie": f"token={env.token}"}):
        status, reply, body = request(env.open, "POST", url, headers)
        assert status == 401, body
        assert reply["www-authenticate"].startswith("Bearer")
        assert env.token.encode() not in body
    assert env.serve.ext("daemon")["pid"] == before["pid"]
    status, _, body = request(env.open, "POST", url, bearer(env.token))
    assert status == 200, body
    assert json.loads(body)["extension"]["state"] == "running"
    assert env.serve.ext("daemon")["pid"] != before["pid"]


def test_bad_actions_and_names_say_why(env: Env) -> None:
    auth = bearer(env.token)
    status, _, body = request(env.open, "POST", "/api/extensions/daemon/explode", auth)
    assert (status, json.loads(body)["error"]) == (
        404,
        "no action 'explode': one of start, stop, restart",
    )
    status, _, body = request(env.open, "POST", "/api/extensions/nope/restart", auth)
    assert status == 404
    assert "nope" in json.loads(body)["error"]
    assert request(env.open, "GET", "/api/extensions/daemon/restart", auth)[0] == 405


def test_the_front_guard_still_applies(env: Env) -> None:
    auth = bearer(env.token)
    assert request(env.open, "GET", "/", {"Host": "evil.example.com"})[0] == 421
    evil = {**auth, "Origin": "http://evil.example.com"}
    assert request(env.open, "POST", "/api/extensions/daemon/stop", evil)[0] == 403
    assert env.serve.ext("daemon")["state"] == "running"


def test_with_a_token_file_only_the_shell_is_open(env: Env) -> None:
    assert request(env.guarded, "GET", "/")[0] == 200
    assert request(env.guarded, "GET", "/static/page.css")[0] == 200
    assert request(env.guarded, "POST", "/")[0] in (401, 405)
    for path in ("/api/status", "/metrics", "/healthz"):
        assert request(env.guarded, "GET", path)[0] == 401, path
    status, _, body = request(env.guarded, "GET", "/api/status", bearer("page-test-token"))
    assert status == 200
    assert json.loads(body)["actions"] is True
    # the generated token of the other front is not this one's
    assert request(env.guarded, "POST", "/api/extensions/daemon/x", bearer(env.token))[0] == 401


def test_no_status_page_serves_none_of_it(env: Env) -> None:
    for method, path in (("GET", "/"), ("GET", "/api/status"), ("GET", "/static/page.js")):
        assert request(env.off, method, path)[0] == 404, path
    assert request(env.off, "GET", "/healthz")[0] == 200  # the rest of the front is there

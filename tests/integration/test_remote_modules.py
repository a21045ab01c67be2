"""Remote modules (``type: remote`` in modules.yaml): the worker's ``remote_module`` kind alone,
then hosted by a real ``spctl serve`` — against a real JSON-RPC 2.0 over HTTP service
(``tests/fixtures/jsonrpc_service``) that answers 401 without the bearer token, the API key or
a token from its OAuth2 endpoint."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FIXTURES,
    HttpFixture,
    Serve,
    serve_fixture,
    server_entry,
    start_http_fixture,
    wait_for,
)
from tests.integration.harness import WorkerHarness
from worker.protocol import EXIT_ERROR, EXIT_OK
from worker.rpc import RpcError

SERVER = FIXTURES / "jsonrpc_service" / "server.py"
TOKEN, KEY, SECRET, WRONG = "tok-4e1b7a", "key-93c0d5", "sec-5eaf00d", "wrong-2c7f1e"
SECRETS = (TOKEN, KEY, SECRET, WRONG, "pw-6d1e", "q-8b2a")


class Service(HttpFixture):
    """The running fixture JSON-RPC service."""

    def url(self, path: str = "/rpc") -> str:
        return f"{self.base}{path}"


def start_service(tmp_path: Path, port: int = 0) -> Service:
    args = ["--token", TOKEN, "--key", KEY, "--client", f"app:{SECRET}"]
    return start_http_fixture(Service, SERVER, tmp_path, args, port)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("service"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spec(url: str, auth: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base = {"name": "fx", "kind": "remote_module", "path": "/", "url": url, "auth": auth}
    return {**base, **extra}


def oauth2(service: Service, secret: str = SECRET) -> dict[str, Any]:
    token_url = service.url("/token")
    return {"type": "oauth2", "clientId": "app", "clientSecret": secret, "tokenUrl": token_url}


# -- the worker's remote_module kind, driven by the harness ----------------------------------


@pytest.mark.anyio
async def test_worker_proxies_service_calls(service: Service) -> None:
    auth = {"type": "apikey", "key": KEY}
    extra = {"provides": ["storage"], "headers": {"X-Client": "harness"}}
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(service.url(), auth, **extra)) as h:
        info = await h.ready(timeout=20)
        assert info["kind"] == "remote_module"
        assert info["metadata"] == {"url": service.url(), "auth": "apikey", "provides": ["storage"]}
        assert await h.request("service", "storage.put", {"key": "a", "value": [1, "x"]}) is True
        assert await h.request("service", "storage.get", ["a"]) == [1, "x"]
        assert await h.request("service", "storage.keys", None) == ["a"]
        with pytest.raises(RpcError) as failed:
            await h.request("service", "storage.fail", None)
        assert (failed.value.code, failed.value.message) == (-32050, "storage says no")
        assert failed.value.data == {"why": "full"}
        with pytest.raises(RpcError) as unknown:
            await h.request("service", "storage.nope", {})
        assert unknown.value.code == -32601  # the service's own answer, unchanged
        with pytest.raises(RpcError) as refused:  # the service has it, provides does not
            await h.request("service", "secret.read", None)
        assert refused.value.code == -32601
        assert refused.value.message == "fx does not provide 'secret' (storage)"
        assert "secret.read" not in service.stats()["methods"]
        assert await h.request("ping")  # also probes the service
        probed = lambda: service.stats()["methods"].count("rpc.ping") >= 2  # noqa: E731
        await h.wait_for(probed, 10, "probe", poll=0.05)  # the service's side: not an event here
        assert await h.request("shutdown") is None
        assert await h.exit_code() == EXIT_OK
    assert "harness" in service.stats()["x_client"]  # `headers:` go with every request


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "auth", "message"),
    [
        ("/rpc", {"type": "bearer", "token": WRONG}, "401 Unauthorized from {url}: check auth"),
        ("/rpc", {"type": "apikey", "key": WRONG}, "401 Unauthorized from {url}: check auth"),
        (
            "/rpc",
            "oauth2-wrong",
            "token request to {token} failed: 401 Unauthorized (invalid_client): check auth",
        ),
        ("/down", {"type": "bearer", "token": TOKEN}, "503 Service Unavailable from {url}"),
        ("/html", {"type": "bearer", "token": TOKEN}, "200 OK from {url}: not a JSON-RPC 2.0"),
        ("closed", {"type": "bearer", "token": TOKEN}, "cannot connect to {url}: "),
    ],
)
async def test_start_fails_with_a_clear_reason(
    service: Service, path: str, auth: Any, message: str
) -> None:
    if auth == "oauth2-wrong":
        auth = oauth2(service, WRONG)
    shown = service.url(path) if path != "closed" else f"http://127.0.0.1:{free_port()}/rpc"
    # user info and a query may hold secrets: the messages show neither
    url = shown.replace("//", "//user:pw-6d1e@") + "?sig=q-8b2a"
    async with WorkerHarness(FIXTURES, name="fx", spec=spec(url, auth)) as h:
        error = await h.notification("error", timeout=20)
        assert await h.exit_code() == EXIT_ERROR
    expected = message.format(url=f"{shown}?…", token=service.url("/token"))
    assert error["message"].startswith(f"remote module fx: {expected}"), error["message"]
    for secret in SECRETS:
        assert secret not in "\n".join([*h.stdout_lines, *h.stderr_lines, error["message"]])


# -- through a real supervisor ---------------------------------------------------------------


def remote(name: str, url: str, auth: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "type": "remote", "url": url, **extra}
    if auth is not None:
        entry["auth"] = auth
    return entry


def plugin(name: str, url: str, auth: dict[str, Any], provides: list[str], **extra: Any) -> Any:
    return remote(name, url, auth, moduleType="plugin", provides=provides, **extra)


def call(s: Serve, ext: str, name: str, *args: str) -> tuple[int, str, str]:
    out = s.spctl("call", ext, name, *args)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def test_remote_modules_through_spctl(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in (("RM_TOKEN", TOKEN), ("RM_KEY", KEY), ("RM_SECRET", SECRET)):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("RM_WRONG", WRONG)
    url = service.url()
    once = {"maxRestarts": 1, "backoff": "100ms"}
    notoken = {k: v for k, v in oauth2(service, "${RM_SECRET}").items() if k != "tokenUrl"}
    modules = [
        plugin("store", url, {"type": "bearer", "token": "${RM_TOKEN}"}, ["storage"]),
        plugin("kvs", url, oauth2(service, "${RM_SECRET}"), ["kv"]),
        remote("watched", url, {"type": "apikey", "key": "${RM_KEY}"}, moduleType="daemon"),
        remote("wrong", url, {"type": "bearer", "token": "${RM_WRONG}"}, moduleType="daemon")
        | {"restart": once},
        plugin("notoken", url, notoken, ["other"]) | {"restart": once},
    ]
    servers = [server_entry("user", "service_user")]
    with serve_fixture(tmp_path, modules, servers) as s:
        s.start()
        for name in ("store", "kvs", "watched", "user"):
            s.wait_state(name, "running", timeout=30)
        assert call(s, "store", "storage.put", "--arg", "key=a", "--arg", "value=41") == (
            0,
            "true",
            "",
        )
        assert call(s, "store", "storage.get", "--arg", "key=a") == (0, "41", "")
        code, _, err = call(s, "store", "storage.fail")
        assert (code, err) == (1, "spctl: storage says no")
        with pytest.raises(RpcError) as failed:  # what `spctl call` got: code, message, data
            s.call("call", "store", "storage.fail", None)
        assert (failed.value.code, failed.value.message) == (-32050, "storage says no")
        assert failed.value.data == {"why": "full"}
        code, _, err = call(s, "store", "secret.read")
        assert code == 1 and "store provides no 'secret.read'" in err, err
        code, _, err = call(s, "watched", "storage.get", "--arg", "key=a")
        assert code == 1 and "watched is a daemon module: it has no services" in err, err
        # another extension, through worker.api.call_service → kvs (oauth2) → the service
        code, out, err = call(s, "user", "remember", "--arg", "key=b", "--arg", "value=2")
        assert (code, out) == (0, "2"), err
        _, out, _ = call(s, "user", "ask", "--json", '{"service": "kv.fail"}')
        assert out == "-32050 kv says no"
        _, out, _ = call(s, "user", "ask", "--json", '{"service": "kv.keys"}')
        assert out == "['b']"  # the tool's text: str() of the result

        wrong = s.wait_state("wrong", "failed", timeout=30)
        reason = f"remote module wrong: 401 Unauthorized from {url}: check auth"
        assert wrong["error"]["message"] == reason
        assert wrong["last_exit"].endswith(f": {reason}")
        assert wrong["restarts"] == 1
        notoken = s.wait_state("notoken", "failed", timeout=60)  # nothing to discover from
        assert "cannot discover the token endpoint" in notoken["error"]["message"]
        outputs = [s.spctl("status").stdout, s.spctl("status", "--json").stdout]
        outputs += [s.spctl("logs", name).stdout for name in ("store", "kvs", "wrong")]
        assert s.stop() == 0
        for output in [*outputs, s.log_path.read_text()]:
            for secret in SECRETS:
                assert secret not in output


def test_service_going_away_restarts_the_worker(tmp_path: Path) -> None:
    service = start_service(tmp_path)
    restart = {"backoff": "200ms", "maxBackoff": "500ms", "maxRestarts": 50}
    auth = {"type": "apikey", "key": KEY}
    modules = [plugin("gone", service.url(), auth, ["storage"], restart=restart)]
    try:
        with serve_fixture(tmp_path, modules, extra_args=["--health-interval", "0.2"]) as s:
            s.start()
            first = s.wait_state("gone", "running", timeout=20)["pid"]
            assert call(s, "gone", "storage.put", "--arg", "key=k", "--arg", "value=1")[1] == "true"
            service.stop()

            def failing_to_connect() -> bool:
                e = s.ext("gone")
                message = (e["error"] or {}).get("message", "")
                return e["restarts"] >= 2 and f"cannot connect to {service.url()}" in message

            wait_for(failing_to_connect, 20, "restarts that cannot connect")
            lost = "the remote module gone failed 2 health checks in a row: cannot connect to"
            reasons = [e.get("reason", "") for e in s.logs() if e.get("event") == "state"]
            assert any(lost in reason for reason in reasons), reasons
            service = start_service(tmp_path, port=service.port)
            again = s.wait_state("gone", "running", timeout=20)
            assert again["pid"] != first
            code, out, err = call(s, "gone", "storage.get", "--arg", "key=k")
            assert (code, out) == (0, "null"), err  # a new service process: a new store
    finally:
        with contextlib.suppress(Exception):
            service.stop()

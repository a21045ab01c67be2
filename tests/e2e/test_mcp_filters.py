"""Per-server filters (``tools:``/``prompts:``/``resources:``) and ``/servers/<name>/mcp``,
end to end: a real ``spctl serve`` with its MCP front, the official MCP SDK client over HTTP
(both eras) and over ``spctl mcp`` (stdio), and ``spctl tools``/``call``/``reload``/``validate``.

``echo`` (the mcp_echo fixture: tools echo, add, slow, sync_slow, boom, progress; prompt greet;
resource echo://readme) is filtered: tools allowed ``a*``, ``e*``, ``progress`` but ``echo``
denied (deny wins); prompt ``greet`` and every ``echo://`` resource denied. ``open`` is the
same fixture unfiltered; ``grow`` has an allow-list and grows tools; the reloads change
``moving``'s filters (each test has its own server, so their order does not matter).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.e2e.test_mcp_front import exchange, post
from tests.helpers import SPCTL, Serve, make_extensions, server_entry, wait_for

MODES = ["auto", "legacy"]
ECHO_FILTERS: dict[str, Any] = {
    "tools": {"allow": ["a*", "e*", "progress"], "deny": ["echo"]},
    "prompts": {"deny": ["greet"]},
    "resources": {"deny": ["echo://*"]},
}
ECHO_TOOLS = ["add", "progress"]  # of echo, slow, sync_slow, boom, progress, add


@dataclass
class HttpFront:
    """What tests.e2e.test_mcp_front's ``exchange``/``post`` need of a front."""

    port: int


@dataclass
class Env:
    serve: Serve
    url: str  # http://127.0.0.1:PORT/mcp
    servers: list[dict[str, Any]]

    def at(self, path: str) -> str:
        return self.url.removesuffix("/mcp") + path

    @property
    def front(self) -> HttpFront:
        return HttpFront(int(self.url.rsplit(":", 1)[1].split("/")[0]))

    def stdio(self, *args: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=SPCTL, args=["mcp", *args], env={"SPCTL_SOCKET": str(self.serve.socket)}
        )

    def core(self, *params: Any) -> Any:
        return self.serve.call(*params)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("filters")
    servers = [
        server_entry("echo", "mcp_echo", **ECHO_FILTERS),
        server_entry("open", "mcp_echo"),
        server_entry("grow", "mcp_echo", tools={"allow": ["a*"]}),
        server_entry("moving", "mcp_echo"),
    ]
    serve = Serve(root, make_extensions(root, [], servers), root / "run" / "control.sock")
    serve.front = True
    serve.extra_args = ["--listen", "127.0.0.1:0"]
    try:
        serve.start()
        for entry in servers:
            serve.wait_state(entry["name"], "running")

        def front_url() -> str | None:
            st = serve.try_status()
            f = st["supervisor"]["mcp_front"] if st else None
            return str(f["url"]) if f and f["state"] == "running" else None

        yield Env(serve, wait_for(front_url, 60, "the MCP front"), servers)
    finally:
        serve.kill()


def run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def names(result: Any, key: str = "tools") -> list[str]:
    return [item.name for item in getattr(result, key)]


async def assert_unknown(call: Awaitable[Any], code: int, message: str) -> None:
    with pytest.raises(MCPError) as err:
        await call
    assert (err.value.code, err.value.message) == (code, message)


async def check_one_server(c: Client) -> None:
    """What ``echo`` shows and answers under its own names, on any one-server face."""
    assert names(await c.list_tools()) == ECHO_TOOLS
    assert names(await c.list_prompts(), "prompts") == []
    assert (await c.list_resources()).resources == []
    result = await c.call_tool("add", {"a": 2, "b": 40})
    assert result.content[0].text == "42"  # type: ignore[union-attr]
    for tool in ("echo", "boom", "nope"):  # denied, not allowed, not there: all the same
        await assert_unknown(c.call_tool(tool, {"text": "x"}), -32602, f"Unknown tool: {tool}")
    await assert_unknown(c.get_prompt("greet", {"name": "Ada"}), -32602, "Unknown prompt: greet")
    # /mcp/<server> passes any URI to its server: the core refuses the filtered one
    await assert_unknown(
        c.read_resource("echo://readme"), -32002, "Resource not found: echo://readme"
    )
    ref = types.PromptReference(type="ref/prompt", name="greet")
    await assert_unknown(
        c.complete(ref, {"name": "name", "value": "al"}), -32602, "Unknown prompt: greet"
    )


# -- lists and calls on every face -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_aggregate_lists_and_calls_only_what_the_filters_let_through(
    env: Env, mode: str
) -> None:
    async def body() -> None:
        async with Client(env.url, mode=mode) as c:
            tools = names(await c.list_tools())
            assert [t for t in tools if t.startswith("echo__")] == ["echo__add", "echo__progress"]
            assert "open__echo" in tools and "open__boom" in tools  # the other server: all
            prompts = names(await c.list_prompts(), "prompts")
            assert "open__greet" in prompts and "echo__greet" not in prompts
            result = await c.call_tool("echo__add", {"a": 1, "b": 2})
            assert result.content[0].text == "3"  # type: ignore[union-attr]
            for tool in ("echo__echo", "echo__boom", "echo__nope"):
                await assert_unknown(c.call_tool(tool, {}), -32602, f"Unknown tool: {tool}")
            await assert_unknown(
                c.get_prompt("echo__greet", {}), -32602, "Unknown prompt: echo__greet"
            )
            # the resource is served by `open` only (echo's copy is filtered)
            read = await c.read_resource("echo://readme")
            assert "mcp-echo" in read.contents[0].text  # type: ignore[union-attr]

    run(body)


@pytest.mark.parametrize(
    ("mode", "path"), [(m, p) for m in MODES for p in ("/mcp/echo", "/servers/echo/mcp")]
)
def test_one_server_lists_and_calls_only_what_the_filters_let_through(
    env: Env, mode: str, path: str
) -> None:
    async def body() -> None:
        async with Client(env.at(path), mode=mode) as c:
            await check_one_server(c)

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_spctl_mcp_stdio_holds_the_filters(env: Env, mode: str) -> None:
    async def body() -> None:
        async with Client(env.stdio("echo"), mode=mode) as c:
            await check_one_server(c)
        async with Client(env.stdio(), mode=mode) as c:
            tools = names(await c.list_tools())
            assert [t for t in tools if t.startswith("echo__")] == ["echo__add", "echo__progress"]
            await assert_unknown(c.call_tool("echo__echo", {}), -32602, "Unknown tool: echo__echo")

    run(body)


def test_spctl_tools_and_call_hold_the_filters(env: Env) -> None:
    listed = env.serve.spctl("tools", "echo", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [t["tool"] for t in json.loads(listed.stdout)["tools"]] == ECHO_TOOLS
    table = env.serve.spctl("tools")
    assert "echo__add" in table.stdout and "echo__echo" not in table.stdout
    ok = env.serve.spctl("call", "echo", "add", "--arg", "a=1", "--arg", "b=2")
    assert (ok.returncode, ok.stdout.strip()) == (0, "3"), ok.stderr
    for tool in ("echo", "boom", "nope"):  # the core refuses the filtered ones itself
        refused = env.serve.spctl("call", "echo", tool, "--arg", "text=x")
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr.strip() == f"spctl: Unknown tool: {tool}"
    open_call = env.serve.spctl("call", "open", "echo", "--arg", "text=free")
    assert (open_call.returncode, open_call.stdout.strip()) == (0, "free"), open_call.stderr


def test_a_new_upstream_tool_stays_hidden_under_an_allow_list(env: Env) -> None:
    async def body() -> None:
        async with Client(env.at("/mcp/grow")) as c, c.listen(tools_list_changed=True) as sub:
            for added in ("hidden_tool", "allowed_tool"):  # only a* passes the allow-list
                await anyio.to_thread.run_sync(
                    env.core, "mcp", "grow", "fixture/tools_changed", {"add": added}, {}
                )
            with anyio.fail_after(10):  # one change the filters let through: announced
                event = await sub.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
            assert names(await c.list_tools()) == ["add", "allowed_tool"]
            await assert_unknown(
                c.call_tool("hidden_tool", {}), -32602, "Unknown tool: hidden_tool"
            )

    run(body)


# -- /servers/<name>/mcp ---------------------------------------------------------------------


INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
)


def test_servers_path_is_the_same_endpoint_as_mcp_server(env: Env) -> None:
    front = env.front
    assert post(front, {}, INIT, "/servers/nope/mcp") == 404
    assert post(front, {}, INIT, "/servers/Not_A_Name/mcp") == 404
    assert post(front, {"Origin": "http://evil.example.com"}, INIT, "/servers/echo/mcp") == 403
    assert post(front, {"Host": "evil.example.com"}, INIT, "/servers/echo/mcp") == 421
    session = exchange(front, {}, INIT, "/servers/open/mcp").getheader("mcp-session-id")
    assert session
    ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert post(front, headers, ping, "/servers/open/mcp") == 200
    assert post(front, headers, ping, "/mcp/open") == 200  # the same face, the same sessions
    assert post(front, headers, ping, "/mcp") == 404
    assert post(front, headers, ping, "/servers/echo/mcp") == 404


@pytest.mark.parametrize("mode", MODES)
def test_servers_path_serves_the_server_under_its_own_names(env: Env, mode: str) -> None:
    async def body() -> None:
        async with Client(env.at("/servers/open/mcp"), mode=mode) as c:
            assert names(await c.list_tools())[:3] == ["echo", "add", "slow"]
            result = await c.call_tool("echo", {"text": "via /servers"})
            assert result.content[0].text == "via /servers"  # type: ignore[union-attr]

    run(body)


# -- validate ---------------------------------------------------------------------------------


def test_validate_warns_of_a_glob_that_matches_nothing(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "extensions"
    other.mkdir()
    (other / "servers.yaml").write_text(
        "servers:\n"
        "  - name: echo\n"
        "    type: local\n"
        "    command: ['true']\n"
        "    tools: {allow: [a*, nothing_*], deny: [echo]}\n"
        "    prompts: {deny: [grete]}\n"
        "  - name: ghost\n"
        "    type: local\n"
        "    command: ['true']\n"
        "    tools: {deny: [x]}\n"
    )
    checked = env.serve.spctl("validate", "--extensions", str(other))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "note: globs not checked (no catalog known yet): ghost" in checked.stdout
    warnings = [line for line in checked.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, checked.stdout
    assert warnings[0].endswith(
        ":5:25: servers[0].tools.allow[1]: 'nothing_*' matches no tool that echo advertises now"
    ), warnings
    assert "servers[0].prompts.deny[0]: 'grete' matches no prompt" in warnings[1], warnings
    as_json = json.loads(env.serve.spctl("validate", "--extensions", str(other), "--json").stdout)
    assert [w["field"] for w in as_json["warnings"]] == [
        "servers[0].tools.allow[1]",
        "servers[0].prompts.deny[0]",
    ]
    alone = {**os.environ, "SPCTL_SOCKET": str(tmp_path / "none.sock")}
    unchecked = subprocess.run(
        [SPCTL, "validate", "--extensions", str(other)], env=alone, capture_output=True, text=True
    )
    assert unchecked.returncode == 0
    assert "note: tools/prompts/resources globs not checked: no supervisor is running" in (
        unchecked.stdout
    )


# -- reload (last: it changes the registry of the module's supervisor) ------------------------


def reload_denying(env: Env, deny: list[str]) -> None:
    """Deny ``deny`` on ``moving`` in servers.yaml and reload: only a refilter, by the plan."""
    env.servers[3]["tools"] = {"deny": deny}
    (env.serve.extensions / "servers.yaml").write_text(
        yaml.safe_dump({"servers": env.servers}, sort_keys=False)
    )
    reload = env.serve.spctl("reload", "--json")
    assert reload.returncode == 0, reload.stderr
    assert json.loads(reload.stdout)["plan"]["refilter"] == ["moving"]


def denied(env: Env) -> list[str]:
    """What ``moving``'s tools filter denies now (the tests here reload it, in any order)."""
    return list(env.servers[3].get("tools", {}).get("deny", []))


def test_a_reload_that_changes_a_filter_publishes_list_changed(env: Env) -> None:
    pid = env.serve.ext("moving")["pid"]

    async def body() -> None:
        async with Client(env.at("/mcp/moving")) as c, c.listen(tools_list_changed=True) as sub:
            before = names(await c.list_tools())
            victim = before[0]
            await anyio.to_thread.run_sync(reload_denying, env, [*denied(env), victim])
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
            assert names(await c.list_tools()) == before[1:]
            await assert_unknown(c.call_tool(victim, {}), -32602, f"Unknown tool: {victim}")

    run(body)
    assert env.serve.ext("moving")["pid"] == pid  # the worker was kept
    assert env.serve.ext("moving")["restarts"] == 0


def test_a_reload_that_changes_a_filter_reaches_a_legacy_session(env: Env) -> None:
    async def body() -> None:
        heard = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.set()

        async with Client(env.at("/mcp/moving"), mode="legacy", message_handler=on_message) as c:
            # The client opens its standalone stream in the background: change the filter
            # again until the announcement is heard (each reload really hides one more tool).
            deny = denied(env)
            with anyio.fail_after(30):
                for tool in names(await c.list_tools())[:-1]:
                    deny.append(tool)
                    await anyio.to_thread.run_sync(reload_denying, env, list(deny))
                    with anyio.move_on_after(2):
                        await heard.wait()
                    if heard.is_set():
                        break
            assert heard.is_set()
            assert not set(deny) & set(names(await c.list_tools()))
            await assert_unknown(c.call_tool(deny[-1], {}), -32602, f"Unknown tool: {deny[-1]}")

    run(body)


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_a_filtered_resource_cannot_be_subscribed_and_its_updates_stop(env: Env) -> None:
    """Subscribing to a filtered URI is refused as not found; a session subscribed before a
    reload hides the URI hears no more of its updates (the others still come)."""
    hidden, kept = "echo://readme", "keep://x"

    async def body() -> None:
        heard: list[str] = []
        kept_heard = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                heard.append(str(message.params.uri))
                if str(message.params.uri) == kept:
                    kept_heard.set()

        async with Client(env.at("/mcp/echo"), mode="legacy") as c:
            await assert_unknown(
                c.subscribe_resource(hidden), -32002, f"Resource not found: {hidden}"
            )
        async with Client(env.at("/mcp/moving"), mode="legacy", message_handler=on_message) as c:
            await c.subscribe_resource(hidden)
            await c.subscribe_resource(kept)
            env.servers[3]["resources"] = {"deny": ["echo://*"]}
            await anyio.to_thread.run_sync(reload_denying, env, denied(env))
            with anyio.fail_after(20):  # the standalone stream opens in the background
                while not kept_heard.is_set():
                    for uri in (hidden, kept):  # in this order, on the same stream
                        await anyio.to_thread.run_sync(
                            env.core, "mcp", "moving", "fixture/touch", {"uri": uri}, {}
                        )
                    with anyio.move_on_after(1):
                        await kept_heard.wait()
            assert hidden not in heard, heard

    run(body)

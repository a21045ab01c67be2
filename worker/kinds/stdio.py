"""The stdio kind: any stdio MCP server (``command: [...]``), spoken to with the SDK's client.

Theory of operation. :class:`StdioServer` spawns the command through the PDEATHSIG
trampoline from the loop thread (the server dies with the worker, however the worker dies), in
its own session, with the worker's environment minus the worker's private variables and its
stderr on the worker's stderr (so ``spctl logs`` shows it). One runner task owns everything
anyio: the two pipe pumps and the SDK :class:`ClientSession`, entered and left in that one
task; it does the legacy ``initialize`` handshake (2025-11-25 era: what published servers
speak) and fetches the catalog (every page). ``mcp`` requests arrive in the channel's tasks
and go through the session: a cancelled request makes the SDK send ``notifications/cancelled``;
progress for a call comes back through the SDK's per-request callback and goes out as the
worker's ``progress`` with the caller's token; a ``*/list_changed`` notification refetches
the catalog and sends ``catalog`` when it differs. Results are plain dicts: the SDK's result
models dumped by alias, without None and without fields the server did not send (so a
2025 consumer never sees defaults of later revisions). A pidfd tells when the server process
ends; :attr:`StdioServer.exited` then resolves and the host ends the worker (non-zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.rpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from worker.trampoline import trampoline_argv

__all__ = ["Catalog", "StdioServer", "StdioSpec", "dump"]

Catalog = dict[str, list[dict[str, Any]]]
MAX_PAGES = 1000
MAX_LINE = 64 * 1024 * 1024
"""Longest JSON-RPC line accepted from the server (a big resource read is one line)."""
STOP_GRACE = 2.0
"""After closing the server's stdin, how long it may take to exit before SIGKILL."""
PRIVATE_ENV = ("SPCTL_CHANNEL_FD", "SPCTL_PARENT_PID")
# list method, catalog key, capability attribute of ServerCapabilities
LISTS = (
    ("tools/list", "tools", "tools"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resourceTemplates", "resources"),
    ("prompts/list", "prompts", "prompts"),
)
RESULTS: dict[str, type[BaseModel]] = {
    "tools/call": types.CallToolResult,
    "tools/list": types.ListToolsResult,
    "resources/list": types.ListResourcesResult,
    "resources/templates/list": types.ListResourceTemplatesResult,
    "resources/read": types.ReadResourceResult,
    "prompts/list": types.ListPromptsResult,
    "prompts/get": types.GetPromptResult,
    "completion/complete": types.CompleteResult,
}


class AnyResult(types.Result):
    """The result of a method the SDK has no model for: whatever the server sent."""

    model_config = ConfigDict(**{**types.Result.model_config, "extra": "allow"})


_CHANGED = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)


def _log(message: str) -> None:
    print(f"spctl-worker: {message}", file=sys.stderr, flush=True)


def dump(model: BaseModel) -> Any:
    """An SDK model as plain JSON data: by alias, no None, only fields that were set."""
    return model.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")


@dataclass(frozen=True)
class StdioSpec:
    """What to run: argv, working directory and extra environment (over the worker's)."""

    command: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env.update(self.env)
        return env


class StdioServer:
    """One stdio MCP server process and the SDK session to it; see the module docstring."""

    def __init__(self, spec: StdioSpec, notify: Callable[..., None]) -> None:
        self.spec = spec
        self._notify = notify
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[str] = self.loop.create_future()
        self.proc: asyncio.subprocess.Process | None = None
        self.session: ClientSession | None = None
        self.info: types.InitializeResult | None = None
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._pidfd = -1
        self._catalog: Catalog | None = None
        self._dirty = False
        self._armed = False
        self._closing = False
        self._refetch: asyncio.Task[None] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"command": list(self.spec.command)}
        if self.info is not None:
            meta["server"] = self.info.server_info.name
            meta["version"] = self.info.server_info.version
            meta["protocol"] = self.info.protocol_version
        return meta

    def notify(self, method: str, *params: Any) -> None:
        with contextlib.suppress(RpcError):  # the channel is closed: the worker is ending
            self._notify(method, *params)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Catalog:
        """Spawn, handshake and fetch the catalog. Raises if the server cannot get that far."""
        await self._spawn()
        self._runner = self.loop.create_task(self._run())
        waiting: set[asyncio.Future[Any]] = {self._ready, self.exited}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            raise RuntimeError(f"the stdio server {self.exited.result()} during the handshake")
        self._ready.result()  # the handshake's exception, if any
        self._catalog = await self.fetch_catalog()
        return self._catalog

    def arm(self) -> None:
        """From now on (the supervisor has the first catalog) changes are sent."""
        self._armed = True
        if self._dirty:
            self._changed()

    async def close(self) -> None:
        """Stop refetching, close the session and the server's stdin; SIGKILL it if it lingers."""
        self._closing = True
        if self._refetch is not None:
            self._refetch.cancel()
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._runner), STOP_GRACE)
        if self.proc is not None and not self.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_GRACE)
        if self.proc is not None and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        if self._runner is not None:
            self._runner.cancel()

    async def _spawn(self) -> asyncio.subprocess.Process:
        # create_subprocess_exec forks on this (the loop's) thread: PDEATHSIG follows it.
        self.proc = proc = await asyncio.create_subprocess_exec(
            *trampoline_argv(self.spec.command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's stderr: the supervisor's log
            cwd=self.spec.cwd,
            env=self.spec.environment(),
            start_new_session=True,  # signals to the worker's group are not the server's
            limit=MAX_LINE,
        )
        self._pidfd = os.pidfd_open(proc.pid)
        self.loop.add_reader(self._pidfd, self._on_exit)
        _log(f"started stdio server (pid {proc.pid}): {' '.join(self.spec.command)}")
        return proc

    def _on_exit(self) -> None:
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self.loop.create_task(self._report_exit())

    async def _report_exit(self) -> None:
        # The pidfd is readable: the server has ended. asyncio's child watcher (a thread)
        # reaps it and sets returncode a moment later; wait that moment for the status.
        proc = self.proc
        assert proc is not None
        for _ in range(100):
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        code = proc.returncode
        if code is None:
            how = "exited"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        if not self._closing:
            _log(f"the stdio server (pid {proc.pid}) {how}")
        if not self.exited.done():
            self.exited.set_result(how)

    async def _run(self) -> None:
        assert self.proc is not None
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump_out, read_send)
                tg.start_soon(self._pump_in, write_recv)
                async with ClientSession(
                    read_recv,
                    write_send,
                    message_handler=self._on_message,
                    logging_callback=self._on_log,
                ) as session:
                    self.info = await session.initialize()  # legacy: the 2025-11-25 era
                    self.session = session
                    self._ready.set_result(None)
                    await self._stop.wait()
                    self.session = None
                tg.cancel_scope.cancel()
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e if isinstance(e, Exception) else RuntimeError(str(e)))
            if not isinstance(e, Exception):
                raise
            if not self._closing:
                _log(f"the session to the stdio server ended: {type(e).__name__}: {e}")
        finally:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the MCP way to ask a stdio server to exit

    async def _pump_out(self, send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        """Server stdout → session, one JSON-RPC message a line."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with send:
            while line := await self.proc.stdout.readline():
                if not line.strip():
                    continue
                item: SessionMessage | Exception
                try:
                    item = SessionMessage(types.jsonrpc_message_adapter.validate_json(line))
                except ValueError as e:
                    _log(f"not a JSON-RPC message from the stdio server: {line[:200]!r}")
                    item = e
                await send.send(item)

    async def _pump_in(self, recv: MemoryObjectReceiveStream[SessionMessage]) -> None:
        """Session → server stdin."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        stdin = self.proc.stdin
        async with recv:
            async for message in recv:
                text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    stdin.write(text.encode() + b"\n")
                    await stdin.drain()
                except (ConnectionError, OSError):
                    return  # the server is gone: the pidfd says so

    # -- catalog --------------------------------------------------------------------------

    async def _list(self, session: ClientSession, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            try:
                page: BaseModel
                if method == "tools/list":
                    page = await session.list_tools(params=params)
                elif method == "resources/list":
                    page = await session.list_resources(params=params)
                elif method == "resources/templates/list":
                    page = await session.list_resource_templates(params=params)
                else:
                    page = await session.list_prompts(params=params)
            except (MCPError, ValidationError) as e:
                _log(f"{method} failed: {e}; keeping {len(items)} items")
                break
            items += dump(page).get(key, [])
            cursor = getattr(page, "next_cursor", None)
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
        return items

    async def fetch_catalog(self) -> Catalog:
        """The four lists, for the capabilities the server announced; a failing list is empty."""
        catalog: Catalog = {"tools": [], "resources": [], "resourceTemplates": [], "prompts": []}
        session, info = self.session, self.info
        if session is None or info is None:
            return catalog
        for method, key, capability in LISTS:
            if getattr(info.capabilities, capability, None) is not None:
                catalog[key] = await self._list(session, method, key)
        return catalog

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, _CHANGED):
            self._changed()
        elif isinstance(message, Exception):
            _log(f"stdio transport: {type(message).__name__}: {message}")

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        name = f" {params.logger}" if params.logger else ""
        _log(f"server log [{params.level}]{name}: {params.data}")

    def _changed(self) -> None:
        self._dirty = True
        if self._armed and not self._closing and self._refetch is None:
            self._refetch = self.loop.create_task(self._refetch_until_clean())

    async def _refetch_until_clean(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                catalog = await self.fetch_catalog()
                if catalog != self._catalog:
                    self._catalog = catalog
                    self.notify("catalog", catalog)
        finally:
            self._refetch = None

    # -- serving --------------------------------------------------------------------------

    async def mcp(
        self, method: str, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Any:
        """The ``mcp`` request: forwarded to the server. Raises RpcError with the MCP code."""
        if not isinstance(method, str):
            raise RpcError(INVALID_PARAMS, "mcp: method must be a string")
        if not isinstance(params, dict | None) or not isinstance(meta, dict | None):
            raise RpcError(INVALID_PARAMS, "mcp: params and meta must be maps")
        session = self.session
        if self._closing or session is None:
            raise RpcError(INTERNAL_ERROR, "the server is shutting down")
        if method in ("initialize", "notifications/initialized"):
            raise RpcError(INVALID_PARAMS, f"mcp: {method} is the worker's business")
        request = _request(method, params or {})
        token = (meta or {}).get("progressToken")
        if isinstance(token, bool) or not isinstance(token, str | int):
            token = None
        done = False

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if not done:
                self.notify("progress", token, progress, total, message)

        on_progress: ProgressFnT | None = None if token is None else report
        model = RESULTS.get(method, AnyResult)
        try:
            result = await session.send_request(request, model, progress_callback=on_progress)
        except MCPError as e:
            raise RpcError(e.code, e.message, e.data) from None
        except ValidationError as e:
            raise RpcError(INTERNAL_ERROR, f"bad {method} result from the server: {e}") from None
        finally:
            done = True
        return dump(result)


def _request_classes() -> dict[str, type[types.Request[Any, Any]]]:
    """method name → the SDK's request model, from the ClientRequest union."""
    out: dict[str, type[types.Request[Any, Any]]] = {}
    for arm in getattr(types.ClientRequest, "__args__", ()):
        annotation = arm.model_fields["method"].annotation
        for name in getattr(annotation, "__args__", ()):
            out[name] = arm
    return out


REQUESTS = _request_classes()


def _request(method: str, params: dict[str, Any]) -> types.Request[Any, Any]:
    """The SDK's typed request for a known method, a generic one for any other."""
    cls = REQUESTS.get(method)
    if cls is None:
        return types.Request[dict[str, Any] | None, str](method=method, params=params or None)
    try:
        request: types.Request[Any, Any] = cls.model_validate(
            {"method": method, "params": params} if params else {"method": method}
        )
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:3]
        )
        raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {problems}") from None
    return request

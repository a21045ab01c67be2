"""The worker's side of the supervisor ⇄ worker protocol, for one extension.

Theory of operation. One :class:`Host` owns the channel (fd 3) and the extension. Its
lifecycle task asks the supervisor for the boot spec (``boot``), applies the rlimits (then, for
an entry with ``user:``, becomes that user: :mod:`worker.privileges`) and extra ``sys.path``
entries, imports the extension, starts it, says ``ready`` and then polls
``is_running()``. Meanwhile the channel serves ``ping`` and ``shutdown`` from the loop, so a
sync ``start()`` running in a thread never delays a ping. A ``handler`` extension (an MCP
server, :mod:`worker.kinds.handler`) is initialized instead of started, says ``ready`` with its
catalog, and from then on serves ``mcp`` requests until ``shutdown``. A ``stdio`` extension
(any stdio MCP server command, :mod:`worker.kinds.stdio`) imports nothing: the worker spawns
the command, says ``ready`` with its catalog, serves ``mcp`` the same way, and ends (non-zero)
when the server process does. A ``handler`` package with no ``create_handler`` but an MCP SDK
server object (module-level ``mcp``, ``server`` or ``app``) is hosted as kind ``sdk``
(:mod:`worker.kinds.sdk`): served in-process through the SDK's in-memory transport, otherwise
like ``stdio``. A ``remote`` extension (``type: remote``, :mod:`worker.kinds.remote`) imports
nothing either: the worker connects to the server's URL over Streamable HTTP and serves it like
``sdk``; each health ping also pings the server. Only ``sdk`` and ``remote`` import the SDK:
``stdio`` speaks JSON-RPC lines itself (:mod:`worker.mcp.lean`). A ``remote_module``
(``type: remote`` in modules.yaml, :mod:`worker.kinds.remote_module`) imports httpx only: the
worker probes the JSON-RPC service at the URL, says ``ready``, proxies ``service`` requests to
it and probes it again on each health ping.

Every way out is a *verdict* (an exit code, see :mod:`worker.protocol`) set once on a future:
the lifecycle ending, the ``shutdown`` handler, or the channel closing. The first verdict wins;
:func:`run` then drains what is queued for the supervisor and ends the process with
``os._exit`` — extension threads (a hung sync ``stop()``, say) must not keep a worker alive
that has decided to die, and interpreter shutdown would join them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from worker import api
from worker.channel import Channel, ChannelClosed
from worker.kinds.daemon import REQUIRED, Daemon, load_daemon
from worker.kinds.handler import (
    Handler,
    McpServer,
    load_handler,
    sdk_attribute,
    use_call_threads,
)
from worker.kinds.services import ServiceTable
from worker.loader import LoadError, apply_rlimits, load_extension
from worker.log import say
from worker.privileges import drop_privileges
from worker.protocol import (
    EXIT_CHANNEL_LOST,
    EXIT_ERROR,
    EXIT_LOAD_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_PROTOCOL_ERROR,
    IMPORTING_KINDS,
    TIMEOUT,
    BootSpec,
)
from worker.rpc import RpcError

if TYPE_CHECKING:
    from worker.kinds.remote_module import RemoteModule
    from worker.mcp.client import McpClient
    from worker.mcp.lean import LeanClient

__all__ = ["BootSpec", "Host", "import_extension", "run"]

DRAIN_TIMEOUT = 2.0
"""How long a dying worker waits for its last messages to reach the supervisor."""
STOP_TIMEOUT = 3.0
"""Best-effort stop()/shutdown() budget when the worker ends on its own (not on request)."""
TRACEBACK_LINES = 20
MESSAGE_CHARS = 2000


def import_extension(spec: BootSpec) -> ModuleType:
    """Add the sys.path entries, then import the extension (on the loop thread: module code
    may call signal.signal()). Raises LoadError or what the import raises."""
    if spec.kind not in IMPORTING_KINDS:
        raise LoadError(
            f"unsupported extension kind {spec.kind!r} (supported: {', '.join(IMPORTING_KINDS)})"
        )
    # The extension's own directory is importable (as the cwd is, unless started with -P),
    # then the extra entries, ahead of everything else.
    where = os.path.abspath(spec.path)
    home = where if os.path.isdir(where) else os.path.dirname(where)
    for entry in (home, *reversed(spec.python_path)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Relative paths in an extension mean its own directory, wherever the supervisor runs.
    os.chdir(home)
    return load_extension(spec.name, spec.path)


def switch_user(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` (``user:``/``group:``). Raises LoadError."""
    try:
        drop_privileges(uid, gid)
    except OSError as e:
        raise LoadError(f"cannot switch to uid {uid} gid {gid}: {e.strerror or e}") from None
    state = os.environ.get("EXTENSION_STATE_DIR")
    if state and not os.access(state, os.W_OK | os.X_OK):
        say(f"EXTENSION_STATE_DIR {state} is not writable by uid {uid} (can it reach it?)")


def failure(exc: BaseException) -> dict[str, str]:
    """The ``{message, traceback}`` payload of ``load_error``/``error``; also logs it."""
    if isinstance(exc, LoadError) and exc.__cause__ is None:
        message, tail = str(exc), ""
    else:
        message = f"{type(exc).__name__}: {exc}"
        text = "".join(traceback.format_exception(exc))
        tail = "\n".join(line[:500] for line in text.splitlines()[-TRACEBACK_LINES:])
        print(text, file=sys.stderr, end="", flush=True)
    say(message)
    return {"message": message[:MESSAGE_CHARS], "traceback": tail}


class Host:
    """The worker's protocol state for one extension; see the module docstring."""

    def __init__(self) -> None:
        self.channel = Channel({"ping": self._ping, "shutdown": self._shutdown}, name="worker")
        self._verdict: asyncio.Future[int] | None = None
        self._daemon: Daemon | None = None
        self._handler: Handler | None = None
        self._server: McpServer | None = None
        self._stdio: LeanClient | McpClient | None = None  # kind stdio, sdk or remote
        self._on_ping: Callable[[], None] | None = None  # kind remote: ping the server too
        self._remote_module: RemoteModule | None = None
        self._lifecycle: asyncio.Task[int] | None = None
        self._stopping: asyncio.Task[None] | None = None

    def finish(self, code: int) -> None:
        """Record the exit code; the first verdict wins."""
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(code)

    async def run(self, sock: socket.socket) -> int:
        """Serve the channel on ``sock`` until a verdict; return the exit code."""
        self._verdict = asyncio.get_running_loop().create_future()
        await self.channel.connect(sock)
        watcher = asyncio.create_task(self._watch_channel())
        self._lifecycle = asyncio.create_task(self._run_lifecycle())
        self._lifecycle.add_done_callback(self._lifecycle_done)
        code = await self._verdict
        if code not in (EXIT_CHANNEL_LOST, EXIT_PROTOCOL_ERROR):
            await self._drain()
        watcher.cancel()
        return code

    async def _drain(self) -> None:
        # A reply is queued by the handler's task after the handler returns: let it run first.
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.channel.drain()
        except (TimeoutError, RpcError, OSError):
            pass

    async def _watch_channel(self) -> None:
        reason = await self.channel.wait_closed()
        if self._verdict is not None and not self._verdict.done():
            lost = _is_eof(reason)
            if not lost:
                say(f"channel closed: {reason}")
            self.finish(EXIT_CHANNEL_LOST if lost else EXIT_PROTOCOL_ERROR)

    def _lifecycle_done(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.finish(task.result())
        elif isinstance(exc, ChannelClosed):
            self.finish(EXIT_CHANNEL_LOST if _is_eof(exc.message) else EXIT_PROTOCOL_ERROR)
        elif isinstance(exc, RpcError):  # the supervisor refused our boot or ready
            say(f"supervisor answered with an error: {exc}")
            self.finish(EXIT_PROTOCOL_ERROR)
        else:
            failure(exc)
            self.finish(EXIT_ERROR)

    async def _run_lifecycle(self) -> int:
        try:
            spec = BootSpec.parse(await self.channel.request("boot", os.getpid()))
        except ValueError as e:
            say(f"protocol error: {e}")
            return EXIT_PROTOCOL_ERROR
        api.set_service_caller(self._call_service)  # worker.api.call_service, for any kind
        try:  # once, before any kind runs code of its extension or starts its command
            apply_rlimits(spec.rlimits)  # while still root, if it is to switch user
            if spec.uid is not None and spec.gid is not None:
                switch_user(spec.uid, spec.gid)
        except Exception as e:
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        if spec.kind == "handler":
            return await self._run_handler(spec)
        if spec.kind == "stdio":
            return await self._run_stdio(spec)
        if spec.kind == "remote":
            return await self._run_remote(spec)
        if spec.kind == "remote_module":
            return await self._run_remote_module(spec)
        try:
            daemon = await self._load(spec)
            if spec.kind == "plugin":  # its services are served from here on
                self.channel.handlers["service"] = ServiceTable(
                    spec.name, daemon.obj, spec.provides
                ).call
        except Exception as e:
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        self._daemon = daemon
        try:
            await daemon.call("initialize")
            await daemon.call("start")
        except Exception as e:
            await self._report("error", e)
            return EXIT_ERROR
        await self.channel.request(
            "ready",
            {
                "pid": os.getpid(),
                "kind": spec.kind,
                "metadata": daemon.metadata,
                "python": sys.version.split()[0],
            },
        )
        return await self._monitor(daemon, spec.check_interval)

    async def _run_handler(self, spec: BootSpec) -> int:
        use_call_threads(asyncio.get_running_loop())
        try:
            module = import_extension(spec)
            sdk = sdk_attribute(module)
            if sdk is None:
                handler = await load_handler(spec.name, module, spec.config, spec.path)
        except Exception as e:
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        if sdk is not None:
            return await self._run_sdk(spec, module)
        self._handler = handler
        try:
            await handler.hook("initialize")
        except Exception as e:
            await self._report("error", e)
            return EXIT_ERROR
        self._server = server = McpServer(handler, self.channel.notify)
        catalog = await server.start()
        self.channel.handlers["mcp"] = server.mcp
        info = {
            "pid": os.getpid(),
            "kind": spec.kind,
            "metadata": handler.metadata,
            "python": sys.version.split()[0],
            "catalog": catalog,
        }
        await self.channel.request("ready", info)
        server.arm()
        await asyncio.get_running_loop().create_future()  # serve `mcp` until `shutdown`
        return EXIT_OK  # not reached: shutdown cancels the lifecycle

    async def _run_stdio(self, spec: BootSpec) -> int:
        # Imported here: only this kind pays for its client (which never imports the SDK).
        from worker.kinds.stdio import StdioServer, StdioSpec

        self._stdio = server = StdioServer(
            StdioSpec(spec.command, spec.cwd, spec.env), self.channel.notify
        )
        try:
            catalog = await server.start()
        except Exception as e:
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        return await self._serve_client(server, "stdio", catalog)

    async def _run_sdk(self, spec: BootSpec, module: ModuleType) -> int:
        # Imported here: only this kind pays for the MCP SDK.
        from worker.kinds.sdk import SdkServer, find_server

        try:
            attribute, obj = find_server(module, spec.path)
            source = f"{module.__name__}.{attribute}"
            self._stdio = server = SdkServer(obj, source, self.channel.notify)
            catalog = await server.start()
        except Exception as e:
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        return await self._serve_client(server, "sdk", catalog)

    async def _run_remote(self, spec: BootSpec) -> int:
        # Imported here: only this kind (and sdk) pays for the MCP SDK and httpx.
        from worker.kinds.remote import RemoteAuth, RemoteError, RemoteServer, RemoteSpec

        try:
            assert spec.url is not None  # BootSpec.parse checked it
            auth = RemoteAuth.parse(spec.auth) if spec.auth else None
            remote = RemoteSpec(spec.name, spec.url, auth, spec.headers)
        except Exception as e:  # a spec the supervisor should never have sent
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        self._stdio = server = RemoteServer(remote, self.channel.notify)
        try:
            catalog = await server.start()
        except RemoteError as e:
            # Unreachable or refused: not a load error, the restart policy (backoff) applies.
            say(str(e))
            self.channel.notify("error", {"message": str(e), "traceback": ""})
            await self._drain()
            return EXIT_ERROR
        self._on_ping = server.health_ping
        return await self._serve_client(server, "remote", catalog)

    async def _run_remote_module(self, spec: BootSpec) -> int:
        # Imported here: only this kind pays for httpx (it never imports the MCP SDK).
        from worker.kinds.remote_module import RemoteError, RemoteModule, RemoteModuleSpec

        try:
            parsed = RemoteModuleSpec.parse(
                spec.name, spec.url, spec.auth, spec.headers, spec.provides
            )
        except Exception as e:  # a spec the supervisor should never have sent
            await self._report("load_error", e)
            return EXIT_LOAD_ERROR
        self._remote_module = module = RemoteModule(parsed)
        try:
            await module.start()
        except RemoteError as e:  # unreachable or refused: the restart policy applies
            say(str(e))
            self.channel.notify("error", {"message": str(e), "traceback": ""})
            await self._drain()
            return EXIT_ERROR
        self.channel.handlers["service"] = module.call
        self._on_ping = module.health_ping
        info = {"pid": os.getpid(), "kind": spec.kind, "metadata": module.metadata}
        await self.channel.request("ready", {**info, "python": sys.version.split()[0]})
        how = await module.exited
        self.channel.notify("error", {"message": f"the {module.label} {how}", "traceback": ""})
        await self._drain()
        return EXIT_ERROR

    async def _serve_client(self, server: LeanClient | McpClient, kind: str, catalog: Any) -> int:
        """Say ready, serve ``mcp`` until shutdown; end (non-zero) if the server ends first."""
        self.channel.handlers["mcp"] = server.mcp
        info = {
            "pid": os.getpid(),
            "kind": kind,
            "metadata": server.metadata,
            "python": sys.version.split()[0],
            "catalog": catalog,
        }
        await self.channel.request("ready", info)
        server.arm()
        how = await server.exited
        message = f"the {server.label} {how}"
        self.channel.notify("error", {"message": message, "traceback": ""})
        await self._drain()
        return EXIT_ERROR

    async def _load(self, spec: BootSpec) -> Daemon:
        module = import_extension(spec)
        required = () if spec.kind == "plugin" else REQUIRED  # a plugin's lifecycle is optional
        return await load_daemon(spec.name, module, spec.config, spec.path, required=required)

    async def _monitor(self, daemon: Daemon, interval: float) -> int:
        while True:
            await asyncio.sleep(interval)
            try:
                running = await daemon.is_running()
            except Exception as e:
                await self._report("error", e)
                return EXIT_ERROR
            if not running:
                say("is_running() returned False")
                self.channel.notify("exiting", {"reason": "is_running() returned False"})
                await self._drain()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await self._stop_extension()
                except TimeoutError:
                    say(f"stop()/shutdown() did not finish in {STOP_TIMEOUT:g}s")
                return EXIT_NOT_RUNNING

    async def _report(self, method: str, exc: BaseException) -> None:
        self.channel.notify(method, failure(exc))
        await self._drain()

    async def _stop_extension(self) -> None:
        if self._handler is not None:
            await self._stop_handler(self._handler)
        if self._stdio is not None:
            await self._stdio.close()
        if self._remote_module is not None:
            await self._remote_module.close()
        if self._daemon is None:
            return
        for method in ("stop", "shutdown"):
            try:
                await self._daemon.call(method)
            except Exception as e:
                say(f"{method}() raised (ignored): {type(e).__name__}: {e}")
                traceback.print_exception(e, file=sys.stderr)

    async def _stop_handler(self, handler: Handler) -> None:
        if self._server is not None:
            await self._server.close()  # calls in flight unwind before the module shuts down
        try:
            await handler.hook("shutdown")
        except Exception as e:
            say(f"shutdown() raised (ignored): {type(e).__name__}: {e}")
            traceback.print_exception(e, file=sys.stderr)

    async def _call_service(self, name: str, params: Any, timeout: float | None) -> Any:
        """A plugin's service, through the supervisor (``worker.api.call_service``)."""
        try:
            return await self.channel.request("service", name, params, timeout=timeout)
        except TimeoutError:
            raise api.ServiceError(TIMEOUT, f"{name}: no answer within {timeout:g}s") from None
        except RpcError as e:
            raise api.ServiceError(e.code, e.message) from None

    # -- handlers served to the supervisor --------------------------------------------------

    def _ping(self) -> dict[str, float]:  # sync: the channel answers it without a task
        if self._on_ping is not None:
            self._on_ping()  # starts a task at most: the answer is never delayed
        return {"t": time.monotonic()}

    async def _shutdown(self) -> None:
        if self._stopping is None:
            if self._lifecycle is not None:
                self._lifecycle.cancel()  # no more is_running() polls, no late "ready"
            self._stopping = asyncio.create_task(self._stop_extension())
        await asyncio.shield(self._stopping)
        # Exit only once the reply to this request is queued, which happens after we return.
        asyncio.get_running_loop().call_soon(self.finish, EXIT_OK)


def _is_eof(reason: str) -> bool:
    # Channel close reasons: "peer closed the connection", "connection lost: …" (EOF/reset:
    # the supervisor is gone or let us go) versus "protocol error: …" (it sent garbage).
    return not reason.startswith("protocol error")


def run(sock: socket.socket) -> NoReturn:
    """Run the host on ``sock`` and end the process with its verdict."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(Host().run(sock))
    except SystemExit as e:  # the extension called sys.exit() on the loop or in a thread
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    except BaseException as e:
        failure(e)
        code = EXIT_ERROR
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)

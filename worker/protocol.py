"""THE contract between the supervisor and a worker: names, payloads, error and exit codes.

Both sides import this module (the supervisor from ``worker``; ``worker`` never imports
``supervisor``), so every name and number below is written exactly once. It imports only the
standard library: no asyncio, no msgpack.

The conversation on the channel (msgpack-rpc over the socketpair, :mod:`worker.rpc`)::

    worker → supervisor   request  BOOT(pid)            → the BootSpec's wire map
    worker → supervisor   request  READY(ReadyInfo)     → None
    supervisor → worker   request  PING()               → {"t": monotonic seconds}
    supervisor → worker   request  MCP(method, params, meta)  → the MCP result (handler/sdk/
                                                          stdio/remote)
    either way            request  SERVICE(name, params)      → the service's result (to a
                                                          plugin; from any worker, via the core)
    supervisor → worker   request  SHUTDOWN()           → None, then the worker exits EXIT_OK
    worker → supervisor   request  ASK(token, method, params)  → the MCP client's result: a
                                   server's elicitation/create, sampling/createMessage or
                                   roots/list for the call whose meta["ask"] carried token;
                                   also notifications/elicitation/complete (answered None),
                                   for that token up to 600 s after its call ended;
                                   also roots/list for a ROOTS_CHANGED token (ROOTS_WINDOW s)
    supervisor → worker   notify   ROOTS_CHANGED(token)  the client of token sent
                                   notifications/roots/list_changed: tell the server; its
                                   roots/list outside any call goes to that client (ASK token)
    worker → supervisor   notify   LOAD_ERROR / ERROR({message, traceback}), EXITING({reason}),
                                   CATALOG(catalog), PROGRESS(token, progress, total, message),
                                   RESOURCE_UPDATED(uri)
    either way            notify   CANCEL(msgid)        (the channel's own: cancel a request)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "APPLICATION_ERROR",
    "ASK",
    "ASK_META",
    "BOOT",
    "CANCEL",
    "CANCELLED",
    "CATALOG",
    "CONNECTION_LOST",
    "ERROR",
    "ERROR_CODES",
    "EXITING",
    "EXIT_CHANNEL_LOST",
    "EXIT_ERROR",
    "EXIT_LOAD_ERROR",
    "EXIT_MEANINGS",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_USAGE",
    "IMPORTING_KINDS",
    "INTERNAL_ERROR",
    "INVALID_CONFIG",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "KINDS",
    "LOAD_ERROR",
    "MCP",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PING",
    "PROGRESS",
    "READY",
    "REFUSED",
    "RESOURCE_NOT_FOUND",
    "RESOURCE_UPDATED",
    "ROOTS_CHANGED",
    "ROOTS_WINDOW",
    "SERVICE",
    "SERVICE_ERROR",
    "SHUTDOWN",
    "TIMEOUT",
    "UNKNOWN_EXTENSION",
    "BootSpec",
    "ReadyInfo",
]

# -- method and notification names -------------------------------------------------------

BOOT: Final = "boot"
READY: Final = "ready"
PING: Final = "ping"
MCP: Final = "mcp"
SERVICE: Final = "service"
SHUTDOWN: Final = "shutdown"
LOAD_ERROR: Final = "load_error"
ERROR: Final = "error"
EXITING: Final = "exiting"
CATALOG: Final = "catalog"
PROGRESS: Final = "progress"
RESOURCE_UPDATED: Final = "resource_updated"
CANCEL: Final = "$cancel"
ASK: Final = "ask"
ROOTS_CHANGED: Final = "roots_changed"
"""An MCP client's ``notifications/roots/list_changed``: the front's control verb
``roots_changed`` [server, token] (its ``ask`` token for that client), and the core's notification
to the server's worker ``roots_changed`` [token] (the core's own token for it). Each hop keeps its
token reaching the client for a ``roots/list`` :data:`ROOTS_WINDOW` seconds."""
ROOTS_WINDOW: Final = 60.0
"""How long after a client's ``notifications/roots/list_changed`` a server's ``roots/list``
outside any call still goes to that client."""
ASK_META: Final = "ask"
"""The ``mcp`` meta key of a call whose MCP client can be asked: ``{"token": int,
"capabilities": {...}}`` (the client's elicitation/sampling/roots capabilities). Each hop
(front, core) replaces the token with one of its own, as for ``progressToken``; a call
without it has no client to ask (``spctl call``, a 2026-07-28 client, the worker's own lists)."""

# -- wire error codes: one meaning each ---------------------------------------------------

# JSON-RPC 2.0's own; they pass through to MCP clients unchanged.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602  # also MCP's "Unknown tool" / "Unknown prompt"
INTERNAL_ERROR: Final = -32603
# MCP's: passes through to MCP clients unchanged.
RESOURCE_NOT_FOUND: Final = -32002
# spctl's own, in JSON-RPC's implementation-defined band (-32000..-32099), clear of MCP's.
SERVICE_ERROR: Final = -32000
"""A plugin's service method raised, or a remote module gave no JSON-RPC answer."""
TIMEOUT: Final = -32001
"""No answer within the call's timeout (the core's ``timeout:``, a service call's deadline)."""
APPLICATION_ERROR: Final = -32003
"""A channel handler raised something that is not an RpcError (MCP clients: INTERNAL_ERROR)."""
CONNECTION_LOST: Final = -32004
"""The peer went away: the channel closed, a stdio server process ended."""
CANCELLED: Final = -32005
"""The caller cancelled the request (``$cancel``); the canceller drops this answer."""
UNKNOWN_EXTENSION: Final = -32010
"""The core knows no extension by that name."""
REFUSED: Final = -32011
"""The core refused: the extension is not running, invalid, or not of that kind."""
INVALID_CONFIG: Final = -32012
"""``reload`` with a registry that does not validate: nothing was changed."""

ERROR_CODES: Final[Mapping[int, str]] = {
    PARSE_ERROR: "PARSE_ERROR",
    INVALID_REQUEST: "INVALID_REQUEST",
    METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    INVALID_PARAMS: "INVALID_PARAMS",
    INTERNAL_ERROR: "INTERNAL_ERROR",
    RESOURCE_NOT_FOUND: "RESOURCE_NOT_FOUND",
    SERVICE_ERROR: "SERVICE_ERROR",
    TIMEOUT: "TIMEOUT",
    APPLICATION_ERROR: "APPLICATION_ERROR",
    CONNECTION_LOST: "CONNECTION_LOST",
    CANCELLED: "CANCELLED",
    UNKNOWN_EXTENSION: "UNKNOWN_EXTENSION",
    REFUSED: "REFUSED",
    INVALID_CONFIG: "INVALID_CONFIG",
}
"""Every code above, by number (a unit test checks that no number is used twice)."""

# -- exit codes of ``python -m worker`` -----------------------------------------------------
# The supervisor classifies a worker's death by them (a negative returncode: a signal).

EXIT_OK: Final = 0
"""Stopped on request (the ``shutdown`` RPC)."""
EXIT_ERROR: Final = 1
"""The extension failed at run time (initialize/start/is_running raised, or it exited 1)."""
EXIT_USAGE: Final = 2
"""Started without the supervisor's environment or without a socket on fd 3."""
EXIT_LOAD_ERROR: Final = 3
"""The extension could not be loaded: import error, no entry point, bad metadata, rlimit."""
EXIT_NOT_RUNNING: Final = 4
"""A daemon's ``is_running()`` returned False."""
EXIT_ORPHANED: Final = 5
"""The supervisor died before the worker could arm PR_SET_PDEATHSIG."""
EXIT_CHANNEL_LOST: Final = 6
"""The supervisor closed the channel (EOF)."""
EXIT_PROTOCOL_ERROR: Final = 7
"""The supervisor sent something the worker could not understand."""

EXIT_MEANINGS: Final[dict[int, str]] = {
    EXIT_USAGE: "worker usage error",
    EXIT_LOAD_ERROR: "load error",
    EXIT_NOT_RUNNING: "daemon reports not running",
    EXIT_ORPHANED: "orphaned at start",
    EXIT_CHANNEL_LOST: "channel to supervisor lost",
    EXIT_PROTOCOL_ERROR: "protocol error",
}
"""The worker's own verdicts (2–7) in words, as ``spctl status`` shows them."""

# -- kinds ---------------------------------------------------------------------------------

IMPORTING_KINDS: Final = ("daemon", "handler", "plugin")
"""Kinds that import the extension at ``path`` ("handler" may turn out to be "sdk")."""
KINDS: Final = (*IMPORTING_KINDS, "stdio", "remote", "remote_module")
"""Every kind a boot spec may name; ``sdk`` is only ever reported in ``ready``."""
_URL_KINDS: Final = ("remote", "remote_module")


# -- payloads ------------------------------------------------------------------------------


def _fail(key: str, expected: str) -> ValueError:
    return ValueError(f"boot spec field {key!r} must be {expected}")


def _strings(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(key, "a list of strings")
    return tuple(value)


def _string_map(raw: Mapping[str, Any], key: str) -> dict[str, str]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(key, "a map of strings")
    return value


def _map(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(key, "a map")
    return value


def _optional_string(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if not isinstance(value, str | None):
        raise _fail(key, "a string")
    return value


@dataclass(frozen=True)
class BootSpec:
    """The supervisor's answer to ``boot``: what to host and under which limits."""

    name: str
    kind: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    rlimits: dict[str, Any] = field(default_factory=dict)
    check_interval: float = 1.0
    python_path: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # kind "stdio": the server's argv, its cwd and extra env
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None  # kind "remote"/"remote_module": the URL, its auth, extra headers
    auth: dict[str, Any] = field(default_factory=dict, repr=False)  # secrets: not in repr
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    provides: tuple[str, ...] = ()  # kind "plugin"/"remote_module": the services it provides
    uid: int | None = None  # user:/group: the ids to switch to before the extension runs
    gid: int | None = None
    sandbox: dict[str, Any] = field(default_factory=dict)  # worker.sandbox.Policy's wire form

    @classmethod
    def parse(cls, raw: object) -> BootSpec:
        """Validate the wire form. Raises ValueError naming the bad field.

        An unknown ``kind`` is not refused here: the worker reports it as a load error."""
        if not isinstance(raw, dict):
            raise ValueError(f"boot spec is not a map: {type(raw).__name__}")
        for key in ("name", "kind", "path"):
            if not isinstance(raw.get(key), str):
                raise _fail(key, "a string")
        kind = raw["kind"]
        if kind in IMPORTING_KINDS and not raw["path"]:
            raise ValueError(f"boot spec field 'path' is required for kind {kind!r}")
        interval = raw.get("check_interval", 1.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise _fail("check_interval", "a positive number")
        command = _strings(raw, "command")
        if kind == "stdio" and not command:
            raise ValueError("boot spec field 'command' is required for kind 'stdio'")
        url = _optional_string(raw, "url")
        if kind in _URL_KINDS and not url:
            raise ValueError(f"boot spec field 'url' is required for kind {kind!r}")
        uid, gid = raw.get("uid"), raw.get("gid")
        if (uid is None) != (gid is None) or not all(
            i is None or (type(i) is int and i >= 0) for i in (uid, gid)
        ):
            raise ValueError("boot spec fields 'uid' and 'gid' must be ids, both or neither")
        return cls(
            name=raw["name"],
            kind=kind,
            path=raw["path"],
            config=_map(raw, "config"),
            rlimits=_map(raw, "rlimits"),
            check_interval=float(interval),
            python_path=_strings(raw, "python_path"),
            command=command,
            cwd=_optional_string(raw, "cwd"),
            env=_string_map(raw, "env"),
            url=url,
            auth=_map(raw, "auth"),
            headers=_string_map(raw, "headers"),
            provides=_strings(raw, "provides"),
            uid=uid,
            gid=gid,
            sandbox=_map(raw, "sandbox"),
        )

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able map :meth:`parse` reads back (fields at their default left out)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "path": self.path}
        for key in ("config", "rlimits", "env", "auth", "headers", "sandbox"):
            if getattr(self, key):
                out[key] = dict(getattr(self, key))
        out["check_interval"] = self.check_interval
        for key in ("python_path", "command", "provides"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        for key in ("cwd", "url", "uid", "gid"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class ReadyInfo:
    """What a worker says in ``ready``: who it is, what it hosts and, for an MCP server, the
    catalog (``{"tools": [...], "resources": [...], "resourceTemplates": [...],
    "prompts": [...]}``)."""

    pid: int
    kind: str  # the boot spec's, except "sdk" for a handler package that is an SDK server
    metadata: dict[str, Any]
    python: str  # the worker's Python version, "3.11.9"
    catalog: dict[str, list[dict[str, Any]]] | None = None

    @classmethod
    def parse(cls, raw: object) -> ReadyInfo:
        """Validate the wire form. Raises ValueError naming the bad field."""
        if not isinstance(raw, dict):
            raise ValueError(f"ready info is not a map: {type(raw).__name__}")
        pid, catalog = raw.get("pid"), raw.get("catalog")
        if type(pid) is not int or pid <= 0:
            raise ValueError("ready info field 'pid' must be a process id")
        for key in ("kind", "python"):
            if not isinstance(raw.get(key), str):
                raise ValueError(f"ready info field {key!r} must be a string")
        metadata = {} if raw.get("metadata") is None else raw["metadata"]
        if not isinstance(metadata, dict):
            raise ValueError("ready info field 'metadata' must be a map")
        if catalog is not None and not (
            isinstance(catalog, dict) and all(isinstance(v, list) for v in catalog.values())
        ):
            raise ValueError("ready info field 'catalog' must be a map of lists")
        return cls(pid, raw["kind"], metadata, raw["python"], catalog)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pid": self.pid,
            "kind": self.kind,
            "metadata": self.metadata,
            "python": self.python,
        }
        if self.catalog is not None:
            out["catalog"] = self.catalog
        return out

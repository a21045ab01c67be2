"""A scripted stdio MCP server for the lean client's tests: JSON lines, standard library only.

Run as ``python fake_mcp_server.py [CONFIG-JSON]``. CONFIG keys: ``version`` (the protocol
version to answer; default: the client's), ``capabilities`` (default: tools), ``init``
(``"hang"``, ``"exit"`` or ``"error"``: misbehave on initialize), ``pages`` (list method → pages
of item names, followed through cursors ``"p1"``, ``"p2"`` …), ``loop`` (list methods whose
``nextCursor`` never changes), ``linger`` (ignore the end of stdin: only SIGKILL ends it).

``tools/call`` does what the tool's name says; see :func:`call`. The tool ``state`` answers
what the server has seen: every method, the cancelled request ids, the initialize params,
the request id of each tool's last call.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

out = sys.stdout.buffer
cfg: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
seen: list[str] = []
cancelled: list[Any] = []
calls: dict[str, Any] = {}  # tool name → the request id of its last call
init: dict[str, Any] = {}
extra_tools: list[str] = []
asking: dict[str, Any] = {}  # the tools/call waiting for the answers to our own requests


def send(message: Any) -> None:
    raw(json.dumps(message).encode() + b"\n")


def raw(data: bytes) -> None:
    out.write(data)
    out.flush()


def result(rid: Any, value: Any) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": value})


def error(rid: Any, code: int, message: str, data: Any = None) -> None:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    send({"jsonrpc": "2.0", "id": rid, "error": body})


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def listing(method: str, params: dict[str, Any]) -> dict[str, Any]:
    key, field = {
        "tools/list": ("tools", "name"),
        "resources/list": ("resources", "uri"),
        "resources/templates/list": ("resourceTemplates", "uriTemplate"),
        "prompts/list": ("prompts", "name"),
    }[method]
    if method in cfg.get("loop", []):
        return {key: [{field: f"{key}-{len(seen)}"}], "nextCursor": "same"}
    pages = cfg.get("pages", {}).get(method) or [["echo"] if key == "tools" else []]
    cursor = params.get("cursor")
    index = int(cursor[1:]) if cursor else 0
    names = pages[index] + (extra_tools if key == "tools" and index == len(pages) - 1 else [])
    page: dict[str, Any] = {key: [{field: n, "description": None} for n in names]}
    if index + 1 < len(pages):
        page["nextCursor"] = f"p{index + 1}"
    return page


def call(rid: Any, name: str, args: dict[str, Any], meta: dict[str, Any]) -> None:
    if name == "echo":
        result(rid, {**text(args.get("text", "")), "extra": {"kept": [1, None]}})
    elif name == "state":
        result(rid, {"seen": seen, "cancelled": cancelled, "init": init, "calls": calls})
    elif name == "garbage":
        raw(b"this is not json\n\n   \n")
        raw(b'"a string"\n[1, 2]\n[]\n{"jsonrpc": "2.0"}\n{"method": 5}\n')
        raw(b'{"jsonrpc": "2.0", "id": 999999, "result": {}}\n')  # nobody asked
        raw(b'{"jsonrpc": "2.0", "id": [1], "result": {}}\n')
        raw(b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "x"}}\n')
        result(rid, text("still fine"))
    elif name == "bad_error":
        raw(b'{"jsonrpc": "2.0", "id": ' + str(rid).encode() + b', "error": "bad"}\n')
    elif name == "huge":  # one line longer than the client accepts, then the answer
        raw(b'{"pad": "' + b"x" * int(args["size"]) + b'"}\n')
        result(rid, text("after the huge line"))
    elif name == "progress":
        token = meta.get("progressToken")
        note = "notifications/progress"
        send({"jsonrpc": "2.0", "method": note, "params": {"progressToken": 987654, "progress": 1}})
        send(
            {"jsonrpc": "2.0", "method": note, "params": {"progressToken": token, "progress": "x"}}
        )
        for i in (1, 2):
            params = {"progressToken": token, "progress": i, "total": 2, "message": f"step {i}"}
            send({"jsonrpc": "2.0", "method": note, "params": params})
        result(rid, text(f"token {token}"))
        send({"jsonrpc": "2.0", "method": note, "params": {"progressToken": token, "progress": 3}})
    elif name == "fail":
        error(rid, -32042, "it failed", {"why": "asked to"})
    elif name == "changed":
        extra_tools.append(f"extra{len(extra_tools) + 1}")
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        result(rid, text("changed"))
    elif name == "ask":  # our own requests first; the call is answered with their answers
        asking.update(rid=rid, answers={})
        send({"jsonrpc": "2.0", "id": "s1", "method": "ping"})
        send({"jsonrpc": "2.0", "id": 7, "method": "roots/list", "params": {}})
        send({"jsonrpc": "2.0", "id": 8, "method": "no/such", "params": {}})
    elif name == "touch":  # a resource update; then one without a usable uri (dropped)
        note = "notifications/resources/updated"
        send({"jsonrpc": "2.0", "method": note, "params": {"uri": args["uri"]}})
        send({"jsonrpc": "2.0", "method": note, "params": {"uri": 5}})
        result(rid, text("touched"))
    elif name == "log":
        params = {"level": "warning", "logger": "fake", "data": "careful now"}
        send({"jsonrpc": "2.0", "method": "notifications/message", "params": params})
        result(rid, text("logged"))
    elif name == "batch":
        send([{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, 5,
              {"jsonrpc": "2.0", "id": rid, "result": text("batched")}])  # fmt: skip
    elif name == "twice":
        result(rid, text("first"))
        result(rid, text("second"))
    elif name == "exit":
        sys.exit(int(args.get("status", 3)))
    elif name == "answer_then_exit":
        result(rid, text("bye"))
        sys.exit(0)
    elif name == "close_stdout":
        os.close(1)
    elif name == "killed":
        os.kill(os.getpid(), signal.SIGTERM)
    elif name == "plain":
        result(rid, "not an object")
    elif name != "hang":
        error(rid, -32602, f"Unknown tool: {name}")


def main() -> None:
    for line in sys.stdin.buffer:
        message = json.loads(line)
        method = message.get("method")
        rid = message.get("id")
        if method is None:  # an answer to one of our requests
            asking["answers"][str(rid)] = message
            if len(asking["answers"]) == 3:
                result(asking["rid"], {"answers": asking["answers"]})
            continue
        seen.append(method)
        params = message.get("params") or {}
        if method == "initialize":
            init.update(params)
            how = cfg.get("init")
            if how == "exit":
                sys.exit(5)
            if how == "error":
                error(rid, -32602, "Unsupported protocol version", {"supported": ["1999"]})
            elif how != "hang":
                answer = {
                    "protocolVersion": cfg.get("version", params.get("protocolVersion")),
                    "capabilities": cfg.get("capabilities", {"tools": {"listChanged": True}}),
                    "serverInfo": {"name": "fake", "version": "1.2.3"},
                }
                result(rid, answer)
        elif method == "notifications/cancelled":
            cancelled.append(params.get("requestId"))
        elif method.endswith("/list"):
            result(rid, listing(method, params))
        elif method == "tools/call":
            calls[params["name"]] = rid
            call(rid, params["name"], params.get("arguments") or {}, params.get("_meta") or {})
        elif method == "ping":
            result(rid, {})
        elif rid is not None:
            error(rid, -32601, "Method not found", method)
    if cfg.get("linger"):
        signal.pause()


if __name__ == "__main__":
    main()

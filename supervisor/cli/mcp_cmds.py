"""``spctl tools``, ``spctl services`` and ``spctl call``: MCP tools and plugin services
through the supervisor, from a shell."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from supervisor.cli.ctl import EXIT_REFUSED, JsonOpt, SocketOpt, call_supervisor
from supervisor.cli.render import table
from supervisor.rules.text import safe, safe_lines

__all__ = ["call", "parse_args", "services", "tools"]


def tools(
    extension: Annotated[str | None, typer.Argument(help="Only this MCP server.")] = None,
    json_: JsonOpt = False,
    sock: SocketOpt = None,
) -> None:
    """List every routed tool: its name on /mcp, its extension and description."""
    result = call_supervisor(sock, "tools", extension)
    if json_:
        print(json.dumps(result, indent=2))
        return
    rows = [
        [t["name"] or "(not on /mcp)", t["extension"], t["tool"], t["description"].split("\n")[0]]
        for t in result["tools"]
    ]
    print(table(["NAME ON /mcp", "EXTENSION", "TOOL", "DESCRIPTION"], rows))
    for p in result["problems"]:
        print(safe(f"not routed: {p['extension']}: {p['kind']} {p['name']!r}: {p['reason']}"))


def services(json_: JsonOpt = False, sock: SocketOpt = None) -> None:
    """List every service a plugin module provides, with its module and state."""
    result = call_supervisor(sock, "services")
    if json_:
        print(json.dumps(result, indent=2))
        return
    rows = [
        [s["service"], s["module"], s["type"], s["state"] + (" (lazy)" if s["lazy"] else "")]
        for s in result["services"]
    ]
    print(table(["SERVICE", "MODULE", "TYPE", "STATE"], rows))


def parse_args(pairs: list[str], raw: str | None) -> dict[str, Any]:
    """``--arg k=v`` (v read as JSON when it parses, else a string) and/or ``--json '{...}'``."""
    args: dict[str, Any] = {}
    if raw:
        loaded = json.loads(raw)
        if not isinstance(loaded, dict):
            raise typer.BadParameter("--json must be a JSON object")
        args.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--arg expects key=value, got {pair!r}")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def call(
    extension: Annotated[str, typer.Argument(help="The MCP server extension, or a plugin module.")],
    tool: Annotated[str, typer.Argument(help="The tool's own name, or a plugin's service.method.")],
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="An argument as key=value (repeatable).")
    ] = None,
    raw: Annotated[
        str | None, typer.Option("--json", help="All arguments as one JSON object.")
    ] = None,
    output_json: Annotated[
        bool, typer.Option("--output-json", help="Print the whole MCP result as JSON.")
    ] = False,
    sock: SocketOpt = None,
) -> None:
    """Call a tool through the supervisor and print its result (exit 1 when isError)."""
    try:
        arguments = parse_args(arg or [], raw)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    result = call_supervisor(sock, "call", extension, tool, arguments, timeout=3600.0)
    if "service" in result and "content" not in result:  # a plugin module's service
        value = result.get("result")
        print(safe_lines(value) if isinstance(value, str) else json.dumps(value, indent=2))
        return
    if output_json:
        print(json.dumps(result, indent=2))
    else:
        for item in result.get("content", []):
            if item.get("type") == "text":
                print(safe_lines(item.get("text", "")))
            else:
                print(json.dumps(item))
        if "structuredContent" in result and not result.get("content"):
            print(json.dumps(result["structuredContent"], indent=2))
    if result.get("isError"):
        if not output_json:
            print(f"spctl: {extension}.{tool} reported an error", file=sys.stderr)
        raise typer.Exit(EXIT_REFUSED)

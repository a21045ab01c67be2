"""``spctl validate``: check the extension registry without starting anything.

Prints every error (``file:line:column: field: message``, one per line) and a one-line
summary; exit 0 when the registry is valid, 1 when it is not (typer exits 2 on usage errors).
Imports only the config package: validation never imports or runs extension code.

Warnings (never a failure): a ``tools``/``prompts``/``resources`` glob that matches nothing the
server advertises. Only a running server knows what it advertises, so they are checked against
the catalogs the running supervisor (on the usual control socket) knows for servers of the same
names, and skipped, with a note saying so, when none is running.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from supervisor.config import ConfigError, LoadResult

__all__ = ["filter_warnings", "report", "summary", "validate"]


def validate(
    extensions: Annotated[
        Path,
        typer.Option(
            "--extensions",
            "-e",
            help="The extensions directory (holding servers.yaml and modules.yaml).",
        ),
    ] = Path("extensions"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON report instead of text.")
    ] = False,
) -> None:
    """Check servers.yaml and modules.yaml and print every error."""
    from supervisor.config import load_registry  # imported here: other verbs must start fast
    from supervisor.control.paths import state_dir
    from supervisor.overrides import Overrides

    result = load_registry(extensions)
    overrides = Overrides(state_dir())
    if overrides.enabled:
        # What serve would really run: `spctl enable/disable` overrides win over the YAML.
        effective = tuple(overrides.apply(result.registry.extensions))
        result = dataclasses.replace(
            result, registry=dataclasses.replace(result.registry, extensions=effective)
        )
    warnings, note = filter_warnings(result)
    if as_json:
        doc = report(result)
        doc["warnings"] = [warning.to_dict() for warning in warnings]
        for entry in doc["extensions"]:
            section = "servers" if entry["kind"] == "server" else "modules"
            entry["enabled_source"] = overrides.source(entry["name"], section)
        typer.echo(json.dumps(doc, indent=2))
    else:
        for error in result.errors:
            typer.echo(str(error))
        for warning in warnings:
            typer.echo(f"warning: {warning}")
        if note:
            typer.echo(f"note: {note}")
        for name, enabled in sorted(overrides.enabled.items()):
            if result.registry.get(name) is not None:
                state = "enabled" if enabled else "disabled"
                typer.echo(f"note: {name} is {state} by an override in {overrides.path}")
        typer.echo(summary(result))
    raise typer.Exit(0 if result.ok else 1)


def filter_warnings(result: LoadResult) -> tuple[list[ConfigError], str | None]:
    """Each filter glob of ``result``'s servers that matches nothing the running supervisor's
    server of that name advertises (as a ConfigError, for its ``file:line:col: field:``), and
    a note when they could not all be checked."""
    from supervisor.config import ConfigError
    from supervisor.control.client import ControlClient, NotRunning, RpcError
    from supervisor.control.paths import client_socket_path
    from supervisor.rules.filters import unmatched

    filtered = [
        ext
        for ext in result.registry.servers
        if ext.tools.sources or ext.prompts.sources or ext.resources.sources
    ]
    if not filtered:
        return [], None
    try:
        with ControlClient(client_socket_path(), timeout=10) as client:
            answer = client.call("mcp_catalogs", True)
    except (NotRunning, OSError, TimeoutError, RpcError):
        return [], "tools/prompts/resources globs not checked: no supervisor is running"
    catalogs = answer.get("servers") if isinstance(answer, dict) else None
    catalogs = catalogs if isinstance(catalogs, dict) else {}
    warnings: list[ConfigError] = []
    unknown = []
    for ext in filtered:
        catalog = catalogs.get(ext.name)
        if not isinstance(catalog, dict):
            unknown.append(ext.name)
            continue
        for source in unmatched(ext, catalog):
            what = source.field.split(".")[-2].removesuffix("s")  # tool, prompt, resource
            message = f"{source.glob!r} matches no {what} that {ext.name} advertises now"
            warnings.append(
                ConfigError(
                    ext.source.file, source.line, source.column, source.field, message, ext.name
                )
            )
    note = None
    if unknown:
        note = "globs not checked (no catalog known yet): " + ", ".join(unknown)
    return warnings, note


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(result: LoadResult) -> str:
    """``3 servers, 2 modules (1 disabled)`` or ``invalid: 4 errors in 2 files``."""
    if not result.ok:
        files = {error.file for error in result.errors}
        return f"invalid: {_plural(len(result.errors), 'error')} in {_plural(len(files), 'file')}"
    registry = result.registry
    text = f"{_plural(len(registry.servers), 'server')}, {_plural(len(registry.modules), 'module')}"
    disabled = sum(not ext.enabled for ext in registry.extensions)
    return f"{text} ({disabled} disabled)" if disabled else text


def report(result: LoadResult) -> dict[str, Any]:
    """The ``--json`` document."""
    registry = result.registry
    return {
        "ok": result.ok,
        "errors": [error.to_dict() for error in result.errors],
        "summary": {
            "servers": len(registry.servers),
            "modules": len(registry.modules),
            "disabled": sum(not ext.enabled for ext in registry.extensions),
        },
        "extensions": [
            {"name": ext.name, "kind": ext.kind, "type": ext.type, "enabled": ext.enabled}
            for ext in registry.extensions
        ],
    }

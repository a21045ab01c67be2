"""``spctl validate``: check the extension registry without starting anything.

Prints every error (``file:line:column: field: message``, one per line) and a one-line
summary; exit 0 when the registry is valid, 1 when it is not (typer exits 2 on usage errors).
Imports only the config package: validation never imports or runs extension code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from supervisor.config import LoadResult

__all__ = ["report", "summary", "validate"]


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
    if as_json:
        doc = report(result)
        for entry in doc["extensions"]:
            section = "servers" if entry["kind"] == "server" else "modules"
            entry["enabled_source"] = overrides.source(entry["name"], section)
        typer.echo(json.dumps(doc, indent=2))
    else:
        for error in result.errors:
            typer.echo(str(error))
        for name, enabled in sorted(overrides.enabled.items()):
            if result.registry.get(name) is not None:
                state = "enabled" if enabled else "disabled"
                typer.echo(f"note: {name} is {state} by an override in {overrides.path}")
        typer.echo(summary(result))
    raise typer.Exit(0 if result.ok else 1)


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

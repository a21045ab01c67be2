"""The ``spctl`` command line (typer).

Kept light on purpose: it imports the config loader and the control client, never the core
or an MCP SDK, so ``spctl status`` starts fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spctl",
    help="Supervise systemprompt-os extensions: one isolated worker process per extension.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """spctl: a process supervisor for systemprompt-os extensions."""


def main() -> None:
    app()

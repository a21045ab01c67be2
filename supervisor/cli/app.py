"""The ``spctl`` command line (typer).

Kept light on purpose: it imports the config loader and the control client, never the core
or an MCP SDK, so ``spctl status`` starts fast.
"""

from __future__ import annotations

import typer

from supervisor.cli import (
    add_cmds,
    audit,
    auth_cmds,
    ctl,
    install_cmds,
    mcp_cmds,
    mcp_stdio,
    page_cmd,
    pin_cmds,
    serve_cmd,
    token_cmds,
    top,
)
from supervisor.cli import validate as _validate

app = typer.Typer(
    name="spctl",
    help="Supervise systemprompt-os extensions: one isolated worker process per extension.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click output whether or not rich happens to be installed beside us (a dev tool
    # pulls it in): help and usage errors look the same everywhere, and scripts can parse them.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """spctl: a process supervisor for systemprompt-os extensions."""


app.command("serve")(serve_cmd.serve)
app.command("status")(ctl.status)
app.command("start")(ctl.start)
app.command("stop")(ctl.stop)
app.command("restart")(ctl.restart)
app.command("enable")(ctl.enable)
app.command("disable")(ctl.disable)
app.command("reload")(ctl.reload)
app.command("logs")(ctl.logs)
app.command("top")(top.top)
app.command("page")(page_cmd.page)
app.command("tools")(mcp_cmds.tools)
app.command("services")(mcp_cmds.services)
app.command("call")(mcp_cmds.call)
app.command("mcp")(mcp_stdio.mcp)
app.command("validate")(_validate.validate)
app.command("pin")(pin_cmds.pin)
app.command("unpin")(pin_cmds.unpin)
app.command("sign")(pin_cmds.sign)
app.add_typer(token_cmds.app, name="token")
app.add_typer(auth_cmds.app, name="auth")
app.command("audit")(audit.audit)
app.command("lock")(install_cmds.lock)
app.command("install")(install_cmds.install)
app.command("upgrade")(install_cmds.upgrade)
app.command("gc")(install_cmds.gc)
app.command("add")(add_cmds.add)
app.command("remove")(add_cmds.remove)


def main() -> None:
    app()

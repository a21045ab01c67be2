"""``spctl page``: the status page's URL, with its action token in the fragment.

The front serves the page at ``/`` (``spctl serve``, unless ``--no-status-page``); its actions
need a bearer token: the ``--token-file`` one, else the one the front wrote 0600 to
``<state dir>/page-token``. ``status`` says which file (``supervisor.mcp_front.status_page``);
this verb reads it and prints ``http://HOST:PORT/#token=…``. The token is in the fragment, which
a browser never sends to a server; the page moves it to the tab's sessionStorage at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import typer

from supervisor.cli.ctl import SocketOpt, call_supervisor

__all__ = ["page"]


def page(
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Print the URL without the token.")
    ] = False,
    sock: SocketOpt = None,
) -> None:
    """Print the live status page's URL, with the token its buttons need (#token=…)."""
    front = call_supervisor(sock, "status")["supervisor"].get("mcp_front")
    if not front:
        _fail("the supervisor runs no MCP front (spctl serve --no-front), so no status page")
    if front.get("status_page") is None:
        _fail("the MCP front serves no status page (spctl serve --no-status-page)")
    url = front.get("url")
    if not url:
        _fail(f"the MCP front is {front.get('state', 'not running')}: see spctl status")
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    if read_only:
        print(base)
        return
    path = Path(front["status_page"]["token_file"])
    try:
        token = path.read_text().strip()
    except OSError as exc:
        _fail(f"cannot read the page's token from {path}: {exc.strerror} (--read-only: no token)")
    if not token:
        _fail(f"{path} is empty: the page's token is missing")
    print(f"{base}#token={quote(token, safe='')}")


def _fail(message: str) -> NoReturn:
    typer.echo(f"spctl page: {message}", err=True)
    raise typer.Exit(1)

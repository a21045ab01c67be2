"""``spctl audit``: read the audit log (``<state dir>/audit.jsonl`` and its rotated copies).

It reads the files directly, so it works whether or not a supervisor is running, and it
never imports the core. Records are printed oldest first, one a line; ``--json`` prints the
JSON lines themselves. ``-f`` keeps printing new records (across rotations) until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from supervisor.control.paths import state_dir
from supervisor.rules.audit import AUDIT_FILE, matches, parse_since
from supervisor.rules.text import safe

__all__ = ["audit", "format_record"]

_FOLLOW_POLL = 0.25  # seconds between looks at the file with -f
_ROTATED = 8  # rotated copies looked for (serve keeps 2)
SYSTEMD_AUDIT = Path("/var/lib/spctl") / AUDIT_FILE  # StateDirectory=spctl in the unit


def audit(
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new records until Ctrl-C.")
    ] = False,
    extension: Annotated[
        str | None, typer.Option("--extension", help="Only the calls to this extension.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records this recent (e.g. 30s, 10m, 2h, 1d)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the JSON lines as stored.")] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="The audit log (default: audit.jsonl in the state dir)."),
    ] = None,
) -> None:
    """Print the audit log of routed calls (tools/call, resources/read, prompts/get, services)."""
    try:
        oldest = time.time() - parse_since(since) if since is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    path = file or _default_path()
    if not path.exists() and not follow:
        print(
            f"spctl audit: no audit log at {path} (is spctl serve running with --audit?)",
            file=sys.stderr,
        )
        raise typer.Exit(1)

    def show(line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return  # a line cut by a crash mid-write
        if not isinstance(record, dict):
            return
        if record.get("event") == "dropped":
            if extension is None:
                print(
                    line.rstrip("\n")
                    if json_
                    else f"{record.get('time')} "
                    f"[{record.get('count')} records dropped: the disk did not keep up]"
                )
            return
        if matches(record, extension=extension, since=oldest):
            print(line.rstrip("\n") if json_ else format_record(record), flush=follow)

    try:
        for copy in _rotated(path):
            with open(copy, encoding="utf-8", errors="replace") as f:
                for line in f:
                    show(line)
        if follow:
            for line in _follow(path):
                show(line)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:
        sys.stderr.close()  # `spctl audit | head`: no traceback


def _default_path() -> Path:
    """The state directory's audit log; from an operator's shell (no ``$STATE_DIRECTORY``)
    the systemd unit's, when nothing is at the usual place and that one exists."""
    path = state_dir() / AUDIT_FILE
    if not os.environ.get("STATE_DIRECTORY") and not path.exists() and SYSTEMD_AUDIT.exists():
        return SYSTEMD_AUDIT
    return path


def format_record(record: dict[str, Any]) -> str:
    """One record as a line for people: time client extension method target outcome ms."""
    target = next(
        (record[k] for k in ("tool", "uri", "prompt", "service", "target") if record.get(k)), "-"
    )
    outcome = str(record.get("outcome", "?"))
    if "code" in record:
        outcome += f" {record['code']}"
    parts = [
        str(record.get("time", "?")),
        str(record.get("client", "?")),
        str(record.get("extension", "?")),
        str(record.get("method", "?")),
        str(target),
        outcome,
        f"{record.get('duration_ms', '?')}ms",
    ]
    if "traceparent" in record:
        parts.append(f"traceparent={record['traceparent']}")
    return safe(" ".join(parts))


def _rotated(path: Path) -> list[Path]:
    """The rotated copies, oldest first, then the file itself (those that exist)."""
    copies = [Path(f"{path}.{n}") for n in range(_ROTATED, 0, -1)]
    return [p for p in [*copies, path] if p.exists()]


def _follow(path: Path) -> Iterator[str]:
    """New lines of ``path`` from its current end, reopening it when it is rotated."""
    f: IO[str] | None = None
    inode = None
    try:
        if path.exists():
            f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - kept open
            f.seek(0, os.SEEK_END)
            inode = os.fstat(f.fileno()).st_ino
        partial = ""
        while True:
            if f is not None:
                chunk = f.read()
                if chunk:
                    *lines, partial = (partial + chunk).split("\n")
                    yield from lines
                    continue
            try:
                now = os.stat(path).st_ino
            except FileNotFoundError:
                now = None
            if now is not None and now != inode:  # rotated (or created): read the new one whole
                if f is not None:
                    f.close()
                f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode, partial = now, ""
                continue
            time.sleep(_FOLLOW_POLL)
    finally:
        if f is not None:
            f.close()

"""The keeper: a tiny process that kills everything of the workers when the supervisor dies.

Theory of operation: workers get PR_SET_PDEATHSIG, but the processes an extension starts the
ordinary way (``subprocess.Popen``, an npm child) do not; they only share the worker's process
group, and a ``setsid`` child not even that. So the supervisor starts the keeper first, holding
the write end of a pipe to the keeper's stdin, and tells it what to kill:

    +<pgid>\\n          watch this process group
    -<pgid>\\n          stop watching it (the supervisor reaped the worker and its group)
    +p<pid>.<start>\\n  watch this process (and its descendants): one that left its worker's
    -p<pid>.<start>\\n  group, told apart from a later one with its pid by its start time
    +c<path>\\n         a cgroup directory of ours (``<own>/spctl-<pid>``, one per hierarchy)

Anything else is ignored. When the pipe reaches EOF — the supervisor exited, or died, even by
SIGKILL — the keeper kills: every process in the cgroups beneath each watched directory (frozen
first where a freezer is, so none can fork away; ``cgroup.kill`` on v2), every watched process
and what descends from it (each stopped with SIGSTOP before its children are listed), every
watched group, and every process whose environment carries its supervisor's lineage mark
(``SPCTL_LINEAGE=<pid>.<start>.``, set for every worker and kept by it for the extension's
processes: see :mod:`supervisor.core.orphans`); then it removes the emptied cgroups and exits 0.
It ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE, and runs in its own session: a terminal's Ctrl-C
or systemd's SIGTERM must not kill it before the supervisor's orderly stop; it leaves when the
pipe closes. (Measured here: 41 descendants gone 14–15 ms after ``kill -9`` of the supervisor.)

Run as ``python -m supervisor.core.keeper [<lineage prefix>]`` (the handle passes the prefix
of its own marks). The keeper side imports only os, sys, signal, time and
:mod:`supervisor.core.kill` (os-only killing, shared with the supervisor); the supervisor-side
handle, :class:`Keeper`, imports ``subprocess`` lazily so the keeper process never pays for it.
The pipe's write end is close-on-exec, so workers never inherit it (an inherited copy would
keep the pipe open after the supervisor died).
"""

from __future__ import annotations

import os
import signal
import sys

from supervisor.core.kill import (
    LINEAGE,
    freeze,
    kill_cgroups,
    kill_trees,
    lineage_prefix,
    marked,
    remove_cgroups,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into the keeper
if TYPE_CHECKING:
    import subprocess

__all__ = ["Keeper", "main"]

_MAX_LINE = 32  # "+" and a pgid fit easily; a longer line is garbage and is skipped whole
_MAX_PATH_LINE = 4098  # "+c" and a path (PATH_MAX)
_MAX_PID = 2**22  # the kernel's PID_MAX_LIMIT: anything larger is garbage, not a group

Watch = tuple[str, object]  # ("g", pgid) | ("p", (pid, start)) | ("c", path)


def _parse(line: bytes, forbidden: frozenset[int]) -> tuple[bool, Watch] | None:
    """``(watch?, what)`` for a well-formed line, else None."""
    if line.startswith(b"+c") and 3 <= len(line) <= _MAX_PATH_LINE:
        path = os.fsdecode(line[2:])
        if not path.startswith("/") or "\0" in path or "/.." in path:
            return None
        return True, ("c", path)
    if not 2 <= len(line) <= _MAX_LINE or line[:1] not in (b"+", b"-"):
        return None
    add = line[:1] == b"+"
    if line[1:2] == b"p":
        pid, dot, start = line[2:].partition(b".")
        if not (dot and pid.isdigit() and start.isdigit()) or not 1 < int(pid) <= _MAX_PID:
            return None
        return add, ("p", (int(pid), int(start)))
    if not line[1:].isdigit():
        return None
    pgid = int(line[1:])
    # 0 means "my own group" to killpg and 1 is init's: never kill either, nor our parent's.
    if pgid <= 1 or pgid > _MAX_PID or pgid in forbidden:
        return None
    return add, ("g", pgid)


def main() -> int:
    """Read watch/unwatch lines from stdin until EOF, then kill everything watched."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    parent = os.getppid()
    # The mark is named by the supervisor (argv): it may already be dead when we get here.
    mark = sys.argv[1] if len(sys.argv) > 1 else ""
    if not (mark.endswith(".") and mark[:-1].replace(".", "", 1).isdigit()):
        mark = ""
    try:
        parent_group = os.getpgid(parent)
    except OSError:  # the parent is already gone; EOF follows at once
        parent_group = os.getpgrp()
    forbidden = frozenset({os.getpgrp(), parent_group})
    watched: set[Watch] = set()
    pending = b""
    skipping = False  # inside an overlong line: drop bytes up to its newline
    fd = sys.stdin.fileno()
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if skipping:
                skipping = False
                continue
            parsed = _parse(line.strip(), forbidden)
            if parsed is None:
                continue
            add, what = parsed
            if add:
                watched.add(what)
            else:
                watched.discard(what)
        if len(pending) > _MAX_PATH_LINE:
            pending, skipping = b"", True
    # The cgroups first: frozen, killed and thawed at once (a keeper killed in between would
    # leave them frozen; the next serve thaws what it finds), then the slower rest.
    cgroups = [str(w) for kind, w in watched if kind == "c"]
    kill_cgroups(cgroups, [c for c in cgroups if freeze(c, True)])
    procs = {w for kind, w in watched if kind == "p"}
    if mark:
        procs |= marked(f"{LINEAGE}={mark}".encode())
    kill_trees(procs)  # type: ignore[arg-type]
    for kind, pgid in watched:
        if kind == "g":
            try:  # noqa: SIM105 (contextlib would be one more import in the keeper)
                os.killpg(pgid, signal.SIGKILL)  # type: ignore[arg-type]
            except OSError:
                pass  # already gone (ProcessLookupError), or not ours to kill (PermissionError)
    remove_cgroups(cgroups)
    return 0


class Keeper:
    """The supervisor's handle on its keeper process.

    Writes are a few bytes to a pipe whose reader does nothing else, so they do not block in
    practice; :meth:`close` waits for the keeper to finish killing (milliseconds).
    """

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._watched: set[int] = set()
        self._procs: set[tuple[int, int]] = set()
        self._cgroups: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def watched(self) -> frozenset[int]:
        return frozenset(self._watched)

    def start(self) -> None:
        """Start the keeper process and tell it every group watched so far.

        Raises:
            OSError: the keeper could not be spawned.
        """
        import subprocess  # only the supervisor side needs it (see the module docstring)

        if self._proc is not None:
            raise RuntimeError("keeper already started")
        self._proc = subprocess.Popen(
            [self._python, "-m", "supervisor.core.keeper", lineage_prefix(os.getpid()) or ""],
            stdin=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        # Popen's pipe ends are non-inheritable (PEP 446): spawned workers never hold it.
        assert self._proc.stdin is not None
        told = [b"+c%s\n" % os.fsencode(path) for path in self._cgroups]
        told += [b"+%d\n" % pgid for pgid in sorted(self._watched)]
        told += [b"+p%d.%d\n" % key for key in sorted(self._procs)]
        if told:
            self._send(b"".join(told))

    def watch(self, pgid: int) -> None:
        """Kill group ``pgid`` if the supervisor dies. Restarts a dead keeper."""
        self._watched.add(pgid)
        self._write(b"+%d\n" % pgid)

    def unwatch(self, pgid: int) -> None:
        """Stop watching ``pgid`` (its worker was reaped). Restarts a dead keeper."""
        self._watched.discard(pgid)
        self._write(b"-%d\n" % pgid)

    def watch_process(self, pid: int, start: int) -> None:
        """Kill process ``pid`` (if it still started at ``start``) and its descendants if the
        supervisor dies. Restarts a dead keeper."""
        if (pid, start) not in self._procs:
            self._procs.add((pid, start))
            self._write(b"+p%d.%d\n" % (pid, start))

    def unwatch_process(self, pid: int, start: int) -> None:
        """Forget process ``pid`` (it is gone). Restarts a dead keeper."""
        if (pid, start) in self._procs:
            self._procs.discard((pid, start))
            self._write(b"-p%d.%d\n" % (pid, start))

    @property
    def processes(self) -> frozenset[tuple[int, int]]:
        return frozenset(self._procs)

    def watch_cgroup(self, path: str) -> None:
        """Kill every process in and beneath cgroup directory ``path`` (and remove them) if
        the supervisor dies. Told to a keeper that starts later."""
        if path not in self._cgroups:
            self._cgroups.append(path)
            if self._proc is not None:
                self._write(b"+c%s\n" % os.fsencode(path))

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe and wait for the keeper to exit.

        The keeper kills every group still watched: unwatch the groups you reaped first.
        Idempotent.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            _finish(proc, timeout)

    def __enter__(self) -> Keeper:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        if self._proc is None:
            raise RuntimeError("keeper not started")
        if self._proc.poll() is not None:
            self._restart()  # it died: the new one learns everything, including this line
            return
        try:
            self._send(data)
        except BrokenPipeError:
            self._restart()

    def _send(self, data: bytes) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _restart(self) -> None:
        old, self._proc = self._proc, None
        if old is not None:
            _finish(old, 1.0)
        self.start()


def _finish(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Close the keeper's pipe and reap it; kill it if it does not leave within ``timeout``."""
    import contextlib
    import subprocess

    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died: there was nobody left to tell
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())

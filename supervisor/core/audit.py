"""The audit log's writer: one JSON line per routed call, off the event loop.

The loop's part is :meth:`AuditLog.record`: append a tuple of what it saw to a deque (no JSON,
no I/O); the writer thread wakes on the first record and gathers for :data:`FLUSH_DELAY`
(or until :data:`BATCH` records wait), so a stream of calls costs it a few wake-ups a second.
The thread builds the records (:func:`supervisor.rules.audit.build_record`: redaction,
truncation), writes them in batches
to ``<state_dir>/audit.jsonl`` (0600, O_APPEND; flushed per batch, never fsynced) and rotates
by size: ``audit.jsonl`` → ``audit.jsonl.1`` → … → ``audit.jsonl.<keep-1>``, so at most
``keep`` files of about ``max_bytes`` each. When the disk cannot keep up, at most
:data:`MAX_PENDING` records wait; beyond that they are counted, and a ``dropped`` line says
how many went missing.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from supervisor.rules.audit import AUDIT_FILE, build_record, iso_time

__all__ = ["AUDIT_FILE", "AuditLog", "AuditOptions"]

log = structlog.get_logger("spctl.audit")

MAX_PENDING = 100_000
BATCH = 512  # records that wake the writer at once …
FLUSH_DELAY = 0.2  # … else it gathers for this long after the first (≤ 5 wake-ups a second)


@dataclass(frozen=True)
class AuditOptions:
    """``spctl serve --audit-max-bytes/--audit-files/--audit-bodies`` (``--no-audit``: None)."""

    path: Path
    max_bytes: int = 16 * 1024 * 1024
    keep: int = 3  # files, the current one included
    bodies: bool = False


class AuditLog:
    def __init__(self, opts: AuditOptions) -> None:
        if opts.max_bytes < 1024:
            raise ValueError("the audit log's size cap must be at least 1024 bytes")
        if opts.keep < 1:
            raise ValueError("the audit log keeps at least one file")
        self.opts = opts
        self.path = opts.path
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self._dropped = 0
        self._seq = 0
        self._fd: int | None = None
        self._size = 0
        self.written = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the file (raises OSError: serve says why and stops) and start the writer."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._open()
        self._thread = threading.Thread(target=self._run, name="spctl-audit", daemon=True)
        self._thread.start()

    def record(
        self,
        client: str,
        extension: str,
        method: str,
        params: Any,
        meta: Any,
        started: float,
        duration: float,
        result: Any = None,
        error_code: int | None = None,
    ) -> None:
        """Queue one call's record (cheap: called on the event loop after every call)."""
        self._seq += 1
        entry = (self._seq, client, extension, method, params, meta, started, duration)
        with self._wake:
            if len(self._pending) >= MAX_PENDING:
                self._dropped += 1
                return
            self._pending.append((*entry, _outcome_part(result), error_code))
            if len(self._pending) in (1, BATCH):
                self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # ----- the writer thread -----

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing and not self._dropped:
                    self._wake.wait()
                if len(self._pending) < BATCH and not self._closing:
                    self._wake.wait(FLUSH_DELAY)  # gather a batch (record wakes it at BATCH)
                batch = list(self._pending)
                self._pending.clear()
                dropped, self._dropped = self._dropped, 0
                closing = self._closing
            if batch or dropped:
                self._write(batch, dropped)
            if closing and not batch:
                return

    def _write(self, batch: list[tuple[Any, ...]], dropped: int) -> None:
        lines = []
        bodies = self.opts.bodies
        for seq, client, ext, method, params, meta, started, duration, result, code in batch:
            try:
                record = build_record(
                    time=started,
                    client=client,
                    extension=ext,
                    method=method,
                    params=params,
                    meta=meta,
                    duration=duration,
                    result=result,
                    error_code=code,
                    seq=seq,
                    bodies=bodies,
                )
                lines.append(json.dumps(record, ensure_ascii=False, default=repr) + "\n")
            except Exception:  # one odd record must not stop the log
                log.exception("cannot build an audit record", extension=ext, method=method)
        if dropped:
            note = {"time": iso_time(time.time()), "event": "dropped", "count": dropped}
            lines.append(json.dumps(note) + "\n")
        try:
            chunk: list[bytes] = []
            size = 0
            for text in lines:
                line = text.encode()
                if self._size + size + len(line) > self.opts.max_bytes and self._size + size:
                    self._put(b"".join(chunk))
                    chunk, size = [], 0
                    self._rotate()
                chunk.append(line)
                size += len(line)
            self._put(b"".join(chunk))
            self.written += len(batch)
        except OSError as exc:
            log.error("cannot write the audit log", path=str(self.path), error=str(exc))
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    def _put(self, data: bytes) -> None:
        if not data:
            return
        if self._fd is None:
            self._open()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older file, or one made under another umask
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        keep = self.opts.keep
        if keep == 1:
            os.unlink(self.path)
        else:
            for n in range(keep - 1, 1, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{n - 1}", f"{self.path}.{n}")
            os.replace(self.path, f"{self.path}.1")
        self._open()


def _outcome_part(result: Any) -> Any:
    """What of a result the record needs (whether it is an error): not the result itself,
    so a large answer is not kept alive in the queue."""
    if isinstance(result, dict) and result.get("isError") is True:
        return {"isError": True}
    return None

"""The audit log's writer (supervisor.core.audit) on real files: mode, batching, rotation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from supervisor.core.audit import AuditLog, AuditOptions


def write(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        params = {"name": f"tool{i}", "arguments": {"password": "hunter2"}}
        log.record("cli uid=1 pid=2", "ext", "tools/call", params, None, 1.7e9, 0.001)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_is_written_0600_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    log = AuditLog(AuditOptions(path=path))
    old = os.umask(0)
    try:
        log.start()
    finally:
        os.umask(old)
    write(log, 2000)
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = lines(path)
    assert [r["seq"] for r in got] == list(range(1, 2001))
    assert "hunter2" not in path.read_text()


def test_an_existing_file_is_made_private_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"old": 1}\n')
    path.chmod(0o644)
    log = AuditLog(AuditOptions(path=path))
    log.start()
    write(log, 1)
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(lines(path)) == 2


def test_rotation_keeps_the_cap_and_the_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    cap = 4096
    log = AuditLog(AuditOptions(path=path, max_bytes=cap, keep=3, bodies=True))
    log.start()
    for k in range(20):  # in several batches, so rotation happens between and within them
        write(log, 50, start=k * 50)
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for f in files:
        assert f.stat().st_size <= cap
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert "hunter2" not in f.read_text()
    # the newest records are kept, in order, without a gap, and every line is whole JSON
    seqs = [r["seq"] for f in reversed(files) for r in lines(f)]
    assert seqs == list(range(seqs[0], 1001))
    assert seqs[0] > 1


def test_a_size_cap_below_one_kib_is_refused(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="at least 1024"):
        AuditLog(AuditOptions(path=tmp_path / "a", max_bytes=100))

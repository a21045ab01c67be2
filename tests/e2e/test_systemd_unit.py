"""The shipped systemd unit (systemd/spctl.service) is valid for systemd 252 and sandboxed.

systemd is not PID 1 on the test machines, so only offline checks are possible:
``systemd-analyze verify`` (every key known and well-formed, binaries present) and
``systemd-analyze security --offline=true`` (the exposure score). ``verify`` only warns about
an unknown key or a bad value and still exits 0, so a clean unit means *no output at all*;
a deliberately broken copy proves that check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, SPCTL

UNIT = REPO / "systemd" / "spctl.service"
ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_LIMIT = 3.0
OVERALL = re.compile(r"Overall exposure level for spctl\.service: (\d+(?:\.\d+)?) (\w+)")
INSTALLED_EXEC = "ExecStart=/opt/spctl/.venv/bin/spctl "

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (needs systemd >= 252 tools)"
)


def _settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → every value assigned to it, in order (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _verifiable_copy(tmp_path: Path, text: str) -> Path:
    """The unit under its own name, with ExecStart pointing at a binary that exists here:
    verify checks that /opt/spctl/.venv/bin/spctl exists, which it does only once installed."""
    assert text.count(INSTALLED_EXEC) == 1, "ExecStart moved: update this test"
    assert Path(SPCTL).is_file(), SPCTL
    unit = tmp_path / "spctl.service"
    unit.write_text(text.replace(INSTALLED_EXEC, f"ExecStart={SPCTL} "))
    return unit


def _verify(unit: Path) -> str:
    """Everything ``systemd-analyze verify`` says about ``unit`` (empty when clean)."""
    assert ANALYZE is not None
    # --man=no: whether man pages are installed says nothing about the unit.
    out = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (out.stdout + out.stderr).strip()
    if out.returncode != 0 and not said:
        said = f"exit status {out.returncode}"
    return said


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    said = _verify(_verifiable_copy(tmp_path, UNIT.read_text()))
    assert said == "", f"systemd-analyze verify complained:\n{said}"


@needs_analyze
@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("unknown key", "NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        ("bad boolean", "ProtectControlGroups=no", "ProtectControlGroups=maybe"),
        ("bad duration", "TimeoutStopSec=30s", "TimeoutStopSec=30 parsecs"),
        ("bad enum value", "KillMode=mixed", "KillMode=gentle"),
        ("unknown section", "[Install]", "[Instal]"),
    ],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, what: str, old: str, new: str) -> None:
    text = UNIT.read_text()
    assert text.count(old) == 1, f"{old!r} is no longer in the unit: pick another mutation"
    said = _verify(_verifiable_copy(tmp_path, text.replace(old, new)))
    assert said, f"verify accepted a unit with a {what}"


@needs_analyze
def test_verify_catches_a_missing_binary(tmp_path: Path) -> None:
    unit = tmp_path / "spctl.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_EXEC, "ExecStart=/nonexistent/spctl "))
    assert "/nonexistent/spctl" in _verify(unit)


def _exposure(unit: Path) -> tuple[float, str, str]:
    """(score, verdict, full report) of ``systemd-analyze security --offline=true``."""
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    found = OVERALL.search(out.stdout)
    assert found, out.stdout
    return float(found[1]), found[2], out.stdout


@needs_analyze
def test_exposure_score_is_ok() -> None:
    score, verdict, report = _exposure(UNIT)
    print(f"systemd-analyze security: exposure {score} {verdict}")
    assert score <= EXPOSURE_LIMIT, report
    assert verdict == "OK", report


@needs_analyze
def test_exposure_score_sees_a_missing_sandbox(tmp_path: Path) -> None:
    bare = tmp_path / "spctl.service"
    bare.write_text(f"[Service]\nType=notify\nUser=spctl\nExecStart={SPCTL} serve\n")
    score, _, report = _exposure(bare)
    assert score > EXPOSURE_LIMIT, report


# What the supervisor relies on (docs/systemd.md): a change here is a change
# of contract, not of taste.
CONTRACT = [
    ("Service.Type", "notify"),
    ("Service.NotifyAccess", "main"),
    ("Service.KillMode", "mixed"),
    ("Service.ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service.RuntimeDirectory", "spctl"),
    ("Service.RuntimeDirectoryMode", "0700"),
    ("Service.StateDirectory", "spctl"),
    ("Service.Delegate", "yes"),
    ("Service.ProtectControlGroups", "no"),
    ("Service.MemoryDenyWriteExecute", "no"),
    ("Service.OOMPolicy", "continue"),
    ("Service.Restart", "on-failure"),
    ("Service.User", "spctl"),
    ("Service.CapabilityBoundingSet", ""),
]


@pytest.mark.parametrize(("key", "value"), CONTRACT)
def test_contract_settings(key: str, value: str) -> None:
    assert _settings(UNIT.read_text()).get(key) == [value]


def test_stop_and_watchdog_timeouts_leave_room() -> None:
    settings = _settings(UNIT.read_text())

    def seconds(key: str) -> float:
        (value,) = settings[key]
        found = re.fullmatch(r"(\d+)(s|min)", value)
        assert found, f"{key}={value}: use s or min"
        return int(found[1]) * (60 if found[2] == "min" else 1)

    # Every worker gets its stopTimeout (10 s by default) before spctl exits 0; systemd's
    # SIGKILL must come later than that.
    assert seconds("Service.TimeoutStopSec") >= 10 + 10
    # spctl sends WATCHDOG=1 every WatchdogSec/2 from a loop that also runs health checks.
    assert 10 <= seconds("Service.WatchdogSec") <= 120
    assert seconds("Service.TimeoutStartSec") > 30  # the default startTimeout

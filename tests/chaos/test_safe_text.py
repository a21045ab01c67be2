"""#17 probe: an extension printing ESC, CR, BS, BEL, NUL must not drive the operator's terminal
through spctl logs, status (reason and traceback) or top; JSON keeps the original string."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import module_entry, serve_fixture, wait_for

RAW = "\x1b[2J\x1b[31mowned\x07\rfake line\x08\x00end"
CONTROLS = ("\x1b", "\x07", "\r", "\x08", "\x00")


def test_control_characters_are_escaped_in_every_human_view(tmp_path: Path) -> None:
    entry = module_entry("nasty", "ansi_error", restart={"policy": "never"})
    with serve_fixture(tmp_path, [entry]) as s:
        s.start()
        wait_for(lambda: s.ext("nasty").get("error"), 20, "nasty to fail")
        views = {
            "status": s.spctl("status").stdout,
            "status nasty": s.spctl("status", "nasty").stdout,
            "top": s.spctl("top", "--once").stdout,
            "logs": s.spctl("logs", "nasty").stdout,
        }
        for view, text in views.items():
            assert not any(c in text for c in CONTROLS), (view, text)
        assert "\\x1b[2J\\x1b[31mowned\\x07" in views["status"]  # the reason
        assert "fake line\\x08\\x00end" in views["status nasty"]  # the traceback
        assert "\\x1b[2J" in views["logs"]
        raw = json.loads(s.spctl("status", "nasty", "--json").stdout)["extensions"][0]
        assert RAW in raw["error"]["message"]  # JSON keeps the original

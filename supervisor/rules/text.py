"""Text an extension produced, made safe for an operator's terminal.

C0 controls but tab (and, where asked, newline), DEL and C1 controls are shown as ``\\xNN``: an
extension must not drive the terminal (escape sequences, carriage returns, bells, NUL) through
``spctl logs``, ``status``, ``top`` or ``tools``. JSON output keeps the original string.
"""

from __future__ import annotations

__all__ = ["CONTROLS", "safe", "safe_lines"]

CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))}
_KEEP_NEWLINES = {c: v for c, v in CONTROLS.items() if c != 0x0A}


def safe(text: str) -> str:
    """``text`` on one line, every control character but tab escaped."""
    return text.translate(CONTROLS)


def safe_lines(text: str) -> str:
    """``text`` with its newlines kept and every other control character but tab escaped."""
    return text.translate(_KEEP_NEWLINES)

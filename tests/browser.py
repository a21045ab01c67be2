"""Headless Chromium (Debian's, through Playwright) and the embedded default served with its
front: what the status page's browser test and its benchmark share.

Playwright never downloads a browser here: it is given ``executable_path``
(:data:`CHROMIUM`); callers skip, saying why, when that file is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import REPO, Serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

__all__ = ["ARGS", "CHROMIUM", "default_serve", "launch"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def launch(p: Playwright) -> Browser:
    """Debian's Chromium, headless."""
    return p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def default_serve(root: Path) -> Serve:
    """A (not yet started) ``spctl serve`` of a copy of the repo's ``extensions/`` under
    ``root``, with its MCP front on a free loopback port."""
    ext = root / "extensions"
    shutil.copytree(
        REPO / "extensions", ext, ignore=shutil.ignore_patterns("__pycache__", ".state")
    )
    s = Serve(root, ext, root / "run" / "control.sock", front=True)
    s.extra_args = ["--listen", "127.0.0.1:0"]
    return s

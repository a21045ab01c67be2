"""Fixtures shared by the integration tests of more than one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from supervisor.core import process, zygote
from supervisor.core.process import set_child_subreaper


@pytest.fixture
def zyg(monkeypatch: pytest.MonkeyPatch) -> Iterator[zygote.Zygote]:
    """The core's zygote, on, for test_zygote and test_zygote_faults."""
    assert set_child_subreaper()  # as serve does: the forked worker is re-parented to us
    monkeypatch.setenv("SPCTL_ZYGOTE", "on")
    monkeypatch.setattr(zygote, "BACKOFF", 0.0)
    process.stop_zygote()  # one an earlier test made (with SPCTL_ZYGOTE=on in the environment)
    z = process.zygote()
    assert z is not None
    yield z
    process.stop_zygote()

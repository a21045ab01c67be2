"""Provenance lines (supervisor.install.origins): what ``spctl status EXT`` shows."""

from __future__ import annotations

from supervisor.install.origins import describe, origin_table


def test_origin_table_and_its_line() -> None:
    table = origin_table("registry:io.github.x/time", "io.github.x/time", "1.0.0", now=0.0)
    assert table == {
        "source": "registry:io.github.x/time",
        "name": "io.github.x/time",
        "version": "1.0.0",
        "added": "1970-01-01T00:00:00Z",
    }
    assert describe(table, "pypi:mcp-server-time==1.0.0") == (
        "io.github.x/time 1.0.0 (spctl add registry:io.github.x/time, 1970-01-01); "
        "install: pypi:mcp-server-time==1.0.0"
    )


def test_without_a_record_only_the_install_source_or_nothing() -> None:
    assert describe(None, "npm:@s/p@1.2.3") == "install: npm:@s/p@1.2.3"
    assert describe({"name": 3}, None) is None  # a table edited into nonsense: ignored
    assert describe(None, None) is None

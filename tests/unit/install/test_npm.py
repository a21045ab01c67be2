"""The npm side of the lock (supervisor.install.npm): what a locked npm tree may hold, read
back from ``spctl.lock`` tables, and npm's own words kept readable. No npm is run here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from supervisor.install.envlock import npm_digest_of
from supervisor.install.npm import NpmError, NpmPackage, _said, parse_packages, split_spec

GOOD = "sha512-" + "A" * 86 + "=="


def item(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "path": "node_modules/@scope/pkg",
        "version": "1.2.3",
        "integrity": GOOD,
        "meta": '{"dependencies":{"dep":"^1"}}',
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_split_spec() -> None:
    assert split_spec("@scope/pkg@1.2.3") == ("@scope/pkg", "1.2.3")
    assert split_spec("@scope/pkg") == ("@scope/pkg", "")
    assert split_spec("pkg@1.0.0") == ("pkg", "1.0.0")
    assert split_spec("pkg") == ("pkg", "")


def test_a_lock_table_round_trips_to_the_package_lock_entry() -> None:
    (pkg,) = parse_packages([item(resolved="https://registry.npmjs.org/x.tgz")], "lock")
    assert pkg.name == "@scope/pkg"
    assert pkg.entry() == {
        "dependencies": {"dep": "^1"},
        "version": "1.2.3",
        "resolved": "https://registry.npmjs.org/x.tgz",
        "integrity": GOOD,
    }
    assert parse_packages([pkg.to_lock()], "lock") == [pkg]


def test_npm_entries_keep_their_other_fields_as_canonical_json() -> None:
    raw = {"path": "node_modules/a", "version": "1.0.0", "integrity": GOOD, "bin": {"a": "x.js"}}
    (pkg,) = parse_packages([raw], "package-lock.json")
    assert pkg.meta == json.dumps({"bin": {"a": "x.js"}}, separators=(",", ":"))


def test_a_nested_and_a_bundled_package() -> None:
    nested = item(path="node_modules/a/node_modules/@s/b")
    bundled = item(path="node_modules/a/node_modules/c", integrity=None, meta='{"inBundle":true}')
    assert [p.path for p in parse_packages([nested, bundled], "lock")] == [
        "node_modules/a/node_modules/@s/b",
        "node_modules/a/node_modules/c",
    ]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"path": "node_modules/../../etc"}, "is not a path inside node_modules/"),
        ({"path": "lib/x"}, "is not a path inside node_modules/"),
        ({"path": "node_modules/a/../b"}, "is not a path inside node_modules/"),
        ({"version": None}, "no version"),
        ({"integrity": None}, "needs an integrity hash"),
        ({"integrity": "sha1-abc="}, "needs an integrity hash"),
        ({"meta": "[1]"}, "meta is not a JSON object"),
        ({"meta": '{"link":true}'}, "a linked package"),
        ({"meta": '{"version":"9"}'}, "a duplicated field"),
        ({"resolved": "file:../x.tgz"}, "resolved must be an http(s) URL"),
    ],
)
def test_bad_lock_entries_are_refused(over: dict[str, Any], message: str) -> None:
    with pytest.raises(NpmError, match=r"lock: packages\[0\]") as info:
        parse_packages([item(**over)], "lock")
    assert message in str(info.value)


def test_a_path_twice_is_refused() -> None:
    with pytest.raises(NpmError, match="listed twice"):
        parse_packages([item(), item()], "lock")


def test_the_digest_covers_the_requirements_and_every_field() -> None:
    pkg = NpmPackage("node_modules/a", "1.0.0", GOOD, "", "{}")
    base = npm_digest_of(["a@1.0.0"], [pkg])
    assert base.startswith("sha256:")
    assert npm_digest_of(["a@1.0.1"], [pkg]) != base
    for changed in (
        NpmPackage("node_modules/a", "1.0.1", GOOD, "", "{}"),
        NpmPackage("node_modules/a", "1.0.0", GOOD.replace("A", "B", 1), "", "{}"),
        NpmPackage("node_modules/a", "1.0.0", GOOD, "", '{"bin":{}}'),
    ):
        assert npm_digest_of(["a@1.0.0"], [changed]) != base


def test_npm_errors_lose_their_boilerplate() -> None:
    said = _said(
        "npm error code E404\n"
        "npm error 404 Not Found - GET https://registry.npmjs.org/nope - Not found\n"
        "npm error 404\n"
        "npm error 404  'nope@1.0.0' is not in this registry.\n"
        "npm error 404 Note that you can also install from a\n"
        "npm error 404 tarball, folder, http url, or git url.\n"
        "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log\n"
    )
    assert said == (
        "code E404 / Not Found - GET https://registry.npmjs.org/nope - Not found / "
        "'nope@1.0.0' is not in this registry."
    )

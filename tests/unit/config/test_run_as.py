"""``user:``/``group:``: resolved at load through the user and group databases; every mistake
is an error with its file, line, field and reason."""

from __future__ import annotations

import grp
import pwd

import pytest

from supervisor.config.schema import RunAs
from tests.unit.config.helpers import Tree, lines

MODULE = "modules:\n  - name: backup\n    type: local\n    path: ./modules/backup\n"
MODULE += "    moduleType: daemon\n"  # keys from line 3, column 5; added keys from line 6


def _free_id(taken: set[int]) -> int:
    return next(i for i in range(4242, 2**31) if i not in taken)


ROOT = pwd.getpwuid(0)
UNKNOWN_UID = _free_id({p.pw_uid for p in pwd.getpwall()})
UNKNOWN_GID = _free_id({g.gr_gid for g in grp.getgrall()})
OTHER_GROUP = next(g for g in grp.getgrall() if g.gr_gid != ROOT.pw_gid)


def test_no_user_runs_as_the_supervisor(tree: Tree) -> None:
    tree.modules(MODULE)
    ext = tree.load().registry.get("backup")
    assert ext is not None and ext.run_as is None


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("user: root", RunAs("root", 0, ROOT.pw_gid)),  # default: the user's primary group
        ("user: 0", RunAs("0", 0, ROOT.pw_gid)),  # a YAML number
        ("user: '0'", RunAs("0", 0, ROOT.pw_gid)),  # digits in a string
        (f"user: root\n    group: {OTHER_GROUP.gr_name}", RunAs("root", 0, OTHER_GROUP.gr_gid)),
        (f"user: root\n    group: {UNKNOWN_GID}", RunAs("root", 0, UNKNOWN_GID)),
        # a numeric uid need not be in the database when its group is given
        (f"user: {UNKNOWN_UID}\n    group: 7", RunAs(str(UNKNOWN_UID), UNKNOWN_UID, 7)),
        ("user: ${RUN_AS}", RunAs("root", 0, ROOT.pw_gid)),  # from the environment
    ],
)
def test_user_and_group_are_resolved(tree: Tree, keys: str, expected: RunAs) -> None:
    tree.modules(MODULE + f"    {keys}\n")
    result = tree.load({"RUN_AS": "root"})
    assert lines(result) == []
    ext = result.registry.get("backup")
    assert ext is not None and ext.run_as == expected


# (id, added keys, "file:line:column", field, message)
BAD: list[tuple[str, str, str, str, str]] = [
    ("unknown user", "user: no-such-user-spctl", "modules.yaml:6:11", "modules[0].user",
     "unknown user 'no-such-user-spctl' (not in the user database)"),
    ("unknown group", "user: root\n    group: no-such-group-spctl", "modules.yaml:7:12",
     "modules[0].group", "unknown group 'no-such-group-spctl' (not in the group database)"),
    ("group without user", "group: root", "modules.yaml:6:12", "modules[0].group",
     "needs user: (whose group it sets)"),
    ("unknown uid without group", f"user: {UNKNOWN_UID}", "modules.yaml:6:11",
     "modules[0].user", f"uid {UNKNOWN_UID} is not in the user database: give its group: too"),
    ("negative uid", "user: -1", "modules.yaml:6:11", "modules[0].user",
     "expected a numeric id from 0 to 4294967294, got -1"),
    ("uid -1 as unsigned", "user: 4294967295", "modules.yaml:6:11", "modules[0].user",
     "expected a numeric id from 0 to 4294967294, got 4294967295"),
    ("boolean user", "user: true", "modules.yaml:6:11", "modules[0].user",
     "expected a user name or a numeric id, got true"),
    ("list group", "user: root\n    group: [a]", "modules.yaml:7:12", "modules[0].group",
     "expected a group name or a numeric id, got"),
    ("empty user", "user: ''", "modules.yaml:6:11", "modules[0].user",
     "expected a user name or a numeric id, got ''"),
    ("unset variable", "user: ${NOPE}", "modules.yaml:6:11", "modules[0].user", "NOPE"),
    # the user and group databases raise ValueError, not KeyError, on a NUL (found by hypothesis)
    ("NUL in user", 'user: "ro\\0ot"', "modules.yaml:6:11", "modules[0].user",
     "a user name cannot contain a NUL character"),
    ("NUL in group", 'user: root\n    group: "wh\\0eel"', "modules.yaml:7:12",
     "modules[0].group", "a group name cannot contain a NUL character"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "where", "field", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_user_or_group(tree: Tree, keys: str, where: str, field: str, message: str) -> None:
    tree.modules(MODULE + f"    {keys}\n")
    result = tree.load()
    assert len(result.errors) == 1, lines(result)
    (line,) = lines(result)
    assert line.startswith(f"extensions/{where}: {field}: "), line
    assert message in line, line
    assert "backup" in result.invalid  # only this extension is invalid

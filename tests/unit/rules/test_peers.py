"""The control socket's peer rule: who descends from a worker, lives in its cgroup, or was
adopted by the supervisor is refused; operators and the MCP front are let in."""

from __future__ import annotations

import pytest

from supervisor.rules.peers import Known, refusal

CORE, FRONT, KEEPER, WORKER = 100, 101, 102, 200
# pid → ppid: a shell (1 → 10 → 11, older than the supervisor) with an operator's spctl (12,
# younger); the supervisor (100) with its front, keeper and a worker of "weather" (200 → 201 →
# 202); an orphan of it (300) and its child (301); the front's own child (400)
TREE = {10: 1, 11: 10, 12: 11, CORE: 1, FRONT: CORE, KEEPER: CORE, WORKER: CORE, 201: WORKER,
        202: 201, 300: CORE, 301: 300, 400: FRONT}  # fmt: skip
OLDER = {1, 10, 11}  # started before the supervisor (start time 5; the supervisor's is 1000)


def stat(p: int) -> tuple[int, int] | None:
    return (TREE[p], 5 if p in OLDER else 2000) if p in TREE else None


PLAIN = "0::/user.slice/session-1.scope\n"
WORKER_GROUP = "0::/system.slice/spctl.service/spctl-100/weather-3\n"
KNOWN = Known(core=CORE, core_start=1000, workers={WORKER: "weather"}, front=FRONT, keeper=KEEPER)
WITH_CGROUPS = Known(
    core=CORE,
    core_start=1000,
    workers={WORKER: "weather"},
    front=FRONT,
    keeper=KEEPER,
    cgroup_parent="spctl-100",
    cgroup_names={"my_ext": "my.ext"},
)


def judge(pid: int, known: Known = KNOWN, cgroups: dict[int, str] | None = None) -> str | None:
    groups = cgroups or {}
    return refusal(
        pid,
        known,
        stat,
        lambda p: groups.get(p, PLAIN) if p in TREE else None,
    )


@pytest.mark.parametrize(
    ("pid", "verdict"),
    [
        (12, None),  # an operator's spctl
        (CORE, None),  # the supervisor itself
        (FRONT, None),
        (400, None),  # the front's child
        (WORKER, "pid 200 is in extension weather's process tree"),
        (202, "pid 202 is in extension weather's process tree"),
        (300, "pid 300 was adopted by the supervisor: a process an extension left behind"),
        (301, "pid 301 descends from pid 300, which was adopted by the supervisor: "
              "a process an extension left behind"),
        (999, "pid 999 is gone"),
        (0, "the peer's pid is not visible in the supervisor's pid namespace"),
    ],
)  # fmt: skip
def test_ancestry(pid: int, verdict: str | None) -> None:
    assert judge(pid) == verdict


def test_a_process_in_a_workers_cgroup_is_refused_whatever_its_ancestry() -> None:
    groups = {12: WORKER_GROUP, 11: "4:memory:/spctl-100/my_ext-12/inner\n0::/\n"}
    assert judge(12, WITH_CGROUPS, groups) == "pid 12 is in extension weather's cgroup"
    assert judge(11, WITH_CGROUPS, groups) == "pid 11 is in extension my.ext's cgroup"
    # the supervisor's own cgroup, a sibling of spctl-100, is not a worker's
    sibling = {12: "0::/system.slice/spctl.service/spctl-supervisor\n"}
    assert judge(12, WITH_CGROUPS, sibling) is None
    assert judge(12, KNOWN, groups) is None  # without cgroups the rule is off


def test_a_cgroup_rule_names_the_orphan_by_its_extension() -> None:
    groups = {300: WORKER_GROUP}
    assert judge(300, WITH_CGROUPS, groups) == "pid 300 is in extension weather's cgroup"


def test_an_operators_walk_ends_at_the_first_process_older_than_the_supervisor() -> None:
    reads: list[int] = []

    def counted(p: int) -> tuple[int, int] | None:
        reads.append(p)
        return stat(p)

    assert refusal(12, KNOWN, counted, lambda p: PLAIN) is None
    assert reads == [12, 11]


def test_an_ancestor_vanishing_mid_walk_is_walked_again() -> None:
    reads: list[int] = []

    def flaky(p: int) -> tuple[int, int] | None:
        reads.append(p)
        if p == 201 and reads.count(201) == 1:
            return None  # gone on the first walk; then 202 was reparented (here: unchanged)
        return stat(p)

    assert refusal(202, KNOWN, flaky, lambda p: PLAIN) == (
        "pid 202 is in extension weather's process tree"
    )
    assert reads.count(202) == 2


def test_ancestry_that_keeps_changing_is_refused() -> None:
    def flaky(p: int) -> tuple[int, int] | None:
        return None if p == 201 else stat(p)

    assert refusal(202, KNOWN, flaky, lambda p: PLAIN) == (
        "cannot trace pid 202's ancestry (its parents keep changing)"
    )


def test_a_loop_in_racing_reads_ends_refused() -> None:
    verdict = refusal(5, KNOWN, lambda p: (6 if p == 5 else 5, 2000), lambda p: PLAIN)
    assert verdict == "cannot trace pid 5's ancestry (deeper than 4096)"

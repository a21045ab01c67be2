"""worker.sandbox.plan: the Landlock rights for every ABI, pure (no system call), and the
policy's wire form."""

from __future__ import annotations

import pytest

from worker import sandbox
from worker.sandbox import (
    BIND_TCP,
    CONNECT_TCP,
    IOCTL_DEV,
    REFER,
    SCOPE_ABSTRACT_UNIX,
    SCOPE_SIGNAL,
    TRUNCATE,
    Plan,
    Policy,
    plan,
)


def test_strict_outbound_on_abi_7_handles_all_and_scopes_signals() -> None:
    p = plan(Policy(writable=("/state",)), 7, ("/py",))
    assert p.handled_fs & (REFER | TRUNCATE | IOCTL_DEV) == REFER | TRUNCATE | IOCTL_DEV
    assert p.handled_net == BIND_TCP  # outbound: connect stays allowed
    assert p.scoped == SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL
    assert "/py" in p.read and "/usr" in p.read and "/state" in p.write
    assert p.missing == ()
    assert p.summary == "landlock ABI 7, fs strict, network outbound, signals scoped"


@pytest.mark.parametrize(
    ("network", "handled"), [("none", BIND_TCP | CONNECT_TCP), ("outbound", BIND_TCP), ("any", 0)]
)
def test_network_modes(network: str, handled: int) -> None:
    assert plan(Policy(network=network), 4).handled_net == handled


@pytest.mark.parametrize(
    ("abi", "missing"),
    [
        (1, ["network rules need ABI 4: network outbound not enforced", "signal scoping needs"]),
        (3, ["network rules need ABI 4", "signal scoping needs ABI 6"]),
        (5, ["signal scoping needs ABI 6: signals not scoped"]),
        (6, []),
    ],
)
def test_a_weaker_kernel_is_said_plainly(abi: int, missing: list[str]) -> None:
    p = plan(Policy(), abi)
    assert len(p.missing) == len(missing)
    for got, want in zip(p.missing, missing, strict=True):
        assert got.startswith(want)
    assert p.handled_fs & REFER == (REFER if abi >= 2 else 0)  # only rights the ABI knows
    assert p.handled_fs & IOCTL_DEV == (IOCTL_DEV if abi >= 5 else 0)


def test_no_landlock_at_all() -> None:
    p = plan(Policy(), 0)
    assert not p.restricts and p.missing == ("landlock",)
    assert "the kernel has no Landlock" in p.summary


def test_off_restricts_nothing_even_signals() -> None:
    p = plan(Policy(filesystem="off", network="any"), 7)
    assert p == Plan(7, summary="sandbox off")


def test_filesystem_off_still_scopes_and_rules_the_network() -> None:
    p = plan(Policy(filesystem="off", network="none"), 7)
    assert p.handled_fs == 0 and p.read == () and p.handled_net and p.scoped


def test_interpreter_paths_that_hold_a_private_path_are_left_out() -> None:
    """A source tree on sys.path that holds the registry must not open it up."""
    policy = Policy(readable=("/repo/extensions/servers/notes",), private=("/repo/extensions",))
    p = plan(policy, 7, ("/repo", "/repo/worker", "/usr/lib/python3", "/repo-other"))
    assert "/repo" not in p.read
    assert {"/repo/worker", "/usr/lib/python3", "/repo-other"} <= set(p.read)
    assert "/repo/extensions/servers/notes" in p.read  # its own, from the supervisor


def test_the_wire_form_round_trips_and_bad_fields_are_named() -> None:
    policy = Policy("strict", "none", ("/a",), ("/b",), True, ("/c",))
    assert Policy.parse(policy.to_wire()) == policy
    assert Policy.parse({}) == Policy()
    for raw, field in [
        ({"filesystem": "x"}, "sandbox.filesystem"),
        ({"network": 1}, "sandbox.network"),
        ({"readable": ["relative"]}, "sandbox.readable"),
        ({"writable": "/x"}, "sandbox.writable"),
        ({"required": "yes"}, "sandbox.required"),
        ([], "sandbox"),
    ]:
        with pytest.raises(ValueError, match=field):
            Policy.parse(raw)


def test_this_kernel_reports_its_abi() -> None:
    assert sandbox.abi_version() >= 0

"""``SPCTL_ZYGOTE``: on by default, off by ``off``/``0``/``no``/``false``; anything else is
refused by ``spctl serve`` with the variable and its value named."""

from __future__ import annotations

import pytest

from supervisor.core.zygote import enabled, switch_problem


@pytest.mark.parametrize("value", [None, "", "on", "ON", "1", "yes", "true", " on "])
def test_on(value: str | None) -> None:
    env = {} if value is None else {"SPCTL_ZYGOTE": value}
    assert enabled(env) and switch_problem(env) is None


@pytest.mark.parametrize("value", ["off", "OFF", "0", "no", "false", " off"])
def test_off(value: str) -> None:
    env = {"SPCTL_ZYGOTE": value}
    assert not enabled(env) and switch_problem(env) is None


@pytest.mark.parametrize("value", ["of", "maybe", "2"])
def test_anything_else_is_a_problem_that_names_it(value: str) -> None:
    assert switch_problem({"SPCTL_ZYGOTE": value}) == f"SPCTL_ZYGOTE={value!r} is not on or off"

"""Restart decisions: the schedule, the intensity limit, load errors and policies."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervisor.config.schema import RestartConfig
from supervisor.rules.exits import Exit
from supervisor.rules.policy import (
    Decision,
    GiveUp,
    Restart,
    RestartHistory,
    Stay,
    backoff_delay,
    decide,
)


def half() -> float:
    """rand() that gives a jitter factor of exactly 1."""
    return 0.5


def const(value: float) -> Callable[[], float]:
    return lambda: value


CRASH = Exit(1, None)
CLEAN = Exit(0, None)
LOAD = Exit(3, None, load_error=True)  # the worker reported a load error, then exited 3
OOM = Exit(None, 9)
ROOMY = RestartConfig(max_restarts=1000, window=60.0)


class Worker:
    """Drives a RestartHistory the way a runner does: start, maybe run, exit, decide."""

    def __init__(self, settings: RestartConfig = ROOMY, *, record_first: bool = False) -> None:
        self.settings = settings
        self.history = RestartHistory()
        self.now = 1000.0
        self.record_first = record_first  # the runner's style: record_exit, then decide

    def life(
        self, exit: Exit = CRASH, *, ran: float | None = None, rand: Callable[[], float] = half
    ) -> Decision:
        """Start; if ``ran`` is set, be running that long; then end with ``exit``."""
        self.history.record_start(self.now)
        self.now += 0.1
        if ran is not None:
            self.history.record_running(self.now)
            self.now += ran
        if self.record_first:
            self.history.record_exit(exit, self.now)
        decision = decide(self.settings, self.history, exit, self.now, rand)
        if isinstance(decision, Restart):
            self.now += decision.delay
        return decision


def delays(decisions: list[Decision]) -> list[float]:
    return [d.delay for d in decisions if isinstance(d, Restart)]


class TestBackoffDelay:
    """backoff × 2^(n-1), capped, jittered, capped again."""

    @pytest.mark.parametrize(
        ("n", "delay"),
        [
            (-1, 0.0),
            (0, 0.0),
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (4, 8.0),
            (5, 16.0),
            (6, 30.0),
            (7, 30.0),
            (100, 30.0),
            (10_000, 30.0),
        ],
    )
    def test_schedule_without_jitter(self, n: int, delay: float) -> None:
        assert backoff_delay(RestartConfig(), n, half) == delay

    @pytest.mark.parametrize(
        ("n", "rand", "delay"),
        [
            (1, 0.0, 0.8),  # the low end: 1 - jitter
            (1, 0.999_999, 1.2),  # the high end: 1 + jitter (rand() < 1)
            (3, 0.25, 3.6),
            (5, 0.0, 12.8),
            (5, 0.999_999, 19.2),
            (6, 0.0, 24.0),  # jitter may shorten a capped delay ...
            (6, 0.999_999, 30.0),  # ... but never lengthen it past the cap
        ],
    )
    def test_jitter_bounds(self, n: int, rand: float, delay: float) -> None:
        assert backoff_delay(RestartConfig(), n, const(rand)) == pytest.approx(delay, abs=1e-5)

    @pytest.mark.parametrize("n", range(1, 12))
    def test_jitter_stays_within_bounds(self, n: int) -> None:
        s = RestartConfig(jitter=0.3)
        base = min(2.0 ** (n - 1), s.max_backoff)
        for i in range(101):
            got = backoff_delay(s, n, const(i / 101))
            assert base * 0.7 <= got <= min(base * 1.3, s.max_backoff)

    def test_rand_not_drawn_without_a_wait(self) -> None:
        def boom() -> float:
            raise AssertionError("rand drawn for an immediate restart")

        assert backoff_delay(RestartConfig(), 0, boom) == 0.0

    def test_custom_base_and_cap(self) -> None:
        s = RestartConfig(backoff=0.5, max_backoff=3.0, jitter=0.0)
        assert [backoff_delay(s, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("record_first", [False, True], ids=["decide-alone", "record-then-decide"])
class TestSchedule:
    """The restart schedule, whether or not the runner records the exit first."""

    def test_crash_loop_backs_off(self, record_first: bool) -> None:
        w = Worker(record_first=record_first)
        got = [w.life() for _ in range(9)]
        assert delays(got) == [0, 1, 2, 4, 8, 16, 30, 30, 30]
        assert [d.attempt for d in got if isinstance(d, Restart)] == list(range(1, 10))
        assert all(isinstance(d, Restart) and d.reason == "exited with status 1" for d in got)

    def test_short_runs_do_not_heal(self, record_first: bool) -> None:
        w = Worker(record_first=record_first)
        assert delays([w.life(ran=59.0) for _ in range(4)]) == [0, 1, 2, 4]

    def test_a_healthy_run_heals_at_once(self, record_first: bool) -> None:
        w = Worker(record_first=record_first)
        first = [w.life() for _ in range(4)]
        healed = w.life(ran=61.0)
        after = [w.life(ran=1.0) for _ in range(2)]
        assert delays([*first, healed, *after]) == [0, 1, 2, 4, 0, 1, 2]
        assert isinstance(healed, Restart)
        assert healed.attempt == 1

    def test_a_run_of_exactly_reset_after_heals(self, record_first: bool) -> None:
        s, h = RestartConfig(), RestartHistory()
        assert isinstance(decide(s, h, CRASH, 0.0, half), Restart)
        h.record_start(0.0)
        h.record_running(100.0)
        if record_first:
            h.record_exit(CRASH, 159.0)
        assert decide(s, h, CRASH, 159.0, half) == Restart(1.0, 2, "exited with status 1")
        h.record_start(200.0)
        h.record_running(200.0)
        if record_first:
            h.record_exit(CRASH, 260.0)
        assert decide(s, h, CRASH, 260.0, half) == Restart(0.0, 1, "exited with status 1")

    def test_custom_reset_after(self, record_first: bool) -> None:
        w = Worker(RestartConfig(max_restarts=100, reset_after=5.0), record_first=record_first)
        assert delays([w.life(), w.life(ran=4.9), w.life(ran=5.5), w.life(ran=0)]) == [0, 1, 0, 1]

    def test_jitter_applies_to_waits_only(self, record_first: bool) -> None:
        w = Worker(record_first=record_first)
        got = [w.life(rand=const(0.0)) for _ in range(4)]
        assert delays(got) == pytest.approx([0, 0.8, 1.6, 3.2])


class TestIntensity:
    """More than max_restarts crashes within window: give up. Every crash counts."""

    def test_sixth_crash_within_a_minute_gives_up(self) -> None:
        w = Worker(RestartConfig())  # 5 within 60s
        got = [w.life() for _ in range(6)]
        assert delays(got) == [0, 1, 2, 4, 8]
        assert got[-1] == GiveUp("5 restarts within 60s: exited with status 1")

    def test_crashes_after_healthy_runs_count_too(self) -> None:
        w = Worker(RestartConfig(max_restarts=3, window=600.0, reset_after=10.0))
        got = [w.life(OOM, ran=20.0) for _ in range(4)]
        assert delays(got) == [0, 0, 0]
        assert got[-1] == GiveUp(
            "3 restarts within 600s: killed by SIGKILL: perhaps out of memory?"
        )

    def test_crashes_that_leave_the_window_are_forgotten(self) -> None:
        s = RestartConfig(max_restarts=5, window=60.0)
        history = RestartHistory()
        for i in range(20):  # one every 13 s: never more than 5 within 60 s
            d = decide(s, history, CRASH, now=13.0 * i, rand=half)
            assert isinstance(d, Restart), (i, d)
        assert len(history.crash_times) == 5

    def test_window_edge(self) -> None:
        s = RestartConfig(max_restarts=1, window=10.0)
        h = RestartHistory()
        assert isinstance(decide(s, h, CRASH, now=0.0, rand=half), Restart)
        assert isinstance(decide(s, h, CRASH, now=10.0, rand=half), Restart)  # 0.0 fell out
        assert isinstance(decide(s, h, CRASH, now=19.9, rand=half), GiveUp)

    def test_zero_restarts_gives_up_at_once(self) -> None:
        w = Worker(RestartConfig(max_restarts=0))
        assert w.life() == GiveUp("0 restarts within 60s: exited with status 1")

    def test_operator_reset_clears_failed(self) -> None:
        w = Worker(RestartConfig(max_restarts=2))
        assert isinstance([w.life() for _ in range(3)][-1], GiveUp)
        w.history.reset()
        again = [w.life() for _ in range(3)]
        assert delays(again) == [0, 1]
        assert isinstance(again[-1], GiveUp)


class TestLoadErrors:
    """A load error is retried once, after a backoff step, then the worker fails."""

    def test_twice_gives_up(self) -> None:
        w = Worker()
        first, second = w.life(LOAD), w.life(LOAD)
        assert first == Restart(1.0, 1, "load error (exit 3)")  # never at once
        assert second == GiveUp("load error twice: load error (exit 3)")

    @pytest.mark.parametrize(
        ("tries", "reason"),
        [
            (1, "load error once: load error (exit 3)"),
            (3, "load error 3 times: load error (exit 3)"),
        ],
    )
    def test_tries(self, tries: int, reason: str) -> None:
        w = Worker(RestartConfig(load_error_tries=tries))
        got = [w.life(LOAD) for _ in range(tries)]
        assert all(isinstance(d, Restart) for d in got[:-1])
        assert got[-1] == GiveUp(reason)

    def test_an_unreported_exit_3_is_an_ordinary_crash(self) -> None:
        # An extension may exit with status 3 at run time: only the worker's report of a load
        # error makes one (the first restart is immediate, and two do not give up).
        w = Worker()
        got = [w.life(Exit(3, None), ran=5.0), w.life(Exit(3, None), ran=5.0)]
        assert got == [
            Restart(0.0, 1, "exited with status 3"),
            Restart(1.0, 2, "exited with status 3"),
        ]

    def test_a_load_error_in_a_streak_keeps_the_streak_delay(self) -> None:
        w = Worker()
        assert delays([w.life(), w.life(), w.life(), w.life(LOAD)]) == [0, 1, 2, 4]

    def test_a_successful_load_breaks_the_row(self) -> None:
        w = Worker()
        got = [w.life(LOAD), w.life(CRASH, ran=1.0), w.life(LOAD), w.life(LOAD)]
        assert [type(d) for d in got] == [Restart, Restart, Restart, GiveUp]

    def test_another_crash_breaks_the_row(self) -> None:
        w = Worker()
        got = [w.life(LOAD), w.life(CRASH), w.life(LOAD)]
        assert all(isinstance(d, Restart) for d in got)


class TestPolicies:
    """always | on-failure | never."""

    @pytest.mark.parametrize(
        "exit", [CLEAN, CRASH, LOAD, OOM], ids=["clean", "crash", "load", "oom"]
    )
    def test_never_stays_for_any_exit(self, exit: Exit) -> None:
        d = Worker(RestartConfig(policy="never")).life(exit)
        assert isinstance(d, Stay)
        assert d.reason.startswith("policy never: ")

    def test_on_failure_stays_after_a_clean_exit(self) -> None:
        d = Worker(RestartConfig(policy="on-failure")).life(CLEAN, ran=5.0)
        assert d == Stay("exited cleanly (policy on-failure)")

    def test_on_failure_restarts_a_clean_exit_we_caused(self) -> None:
        exit = Exit(0, None, cause="memory limit 256MiB exceeded (rss 301MiB)")
        d = Worker(RestartConfig(policy="on-failure")).life(exit)
        assert d == Restart(
            0.0, 1, "memory limit 256MiB exceeded (rss 301MiB) (exited with status 0)"
        )

    def test_always_restarts_a_clean_exit_and_counts_it(self) -> None:
        w = Worker(RestartConfig(policy="always", max_restarts=2))
        got = [w.life(CLEAN) for _ in range(3)]
        assert delays(got) == [0, 1]
        assert got[-1] == GiveUp("2 restarts within 60s: exited cleanly")

    def test_a_stay_does_not_count_as_a_crash(self) -> None:
        w = Worker(RestartConfig(policy="on-failure"))
        w.life(CLEAN)
        assert (w.history.consecutive, len(w.history.crash_times)) == (0, 0)

    def test_requested_stop_is_not_the_policys_business(self) -> None:
        with pytest.raises(ValueError, match="requested"):
            decide(RestartConfig(), RestartHistory(), Exit(0, None, requested=True), 0.0)


class TestHistory:
    """RestartHistory records runs; reset() forgets them."""

    def test_run_bookkeeping(self) -> None:
        h = RestartHistory()
        h.record_start(10.0)
        assert (h.started_at, h.running_at) == (10.0, None)
        h.record_running(10.5)
        h.record_exit(CRASH, 40.5)
        assert (h.started_at, h.running_at, h.last_run, h.last_exit) == (None, None, 30.0, CRASH)

    def test_a_run_that_never_got_ready_lasted_zero(self) -> None:
        h = RestartHistory()
        h.record_start(10.0)
        h.record_exit(CRASH, 500.0)
        assert h.last_run == 0.0

    def test_requested_exits_do_not_touch_the_load_error_row(self) -> None:
        h = RestartHistory()
        h.record_exit(LOAD, 1.0)
        h.record_exit(Exit(0, None, requested=True), 2.0)
        assert h.load_errors == 1

    def test_reset(self) -> None:
        w = Worker()
        for exit in (CRASH, CRASH, LOAD):
            w.life(exit)
        w.history.reset()
        h = w.history
        assert (h.consecutive, list(h.crash_times), h.load_errors, h.last_exit) == (0, [], 0, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "sometimes"}, "policy"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"window": 0.0}, "window"),
        ({"backoff": -1.0}, "backoff"),
        ({"max_backoff": -1.0}, "max_backoff"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"reset_after": -1.0}, "reset_after"),
        ({"load_error_tries": 0}, "load_error_tries"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RestartConfig(**kwargs)  # type: ignore[arg-type]

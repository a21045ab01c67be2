"""Health checks: pings, answers, misses and the verdict."""

from __future__ import annotations

import pytest

from supervisor.rules.health import HealthSettings, HealthTracker, Healthy, Unhealthy, Verdict


class TestVerdicts:
    """Misses in a row make a worker unhealthy; any answer forgives."""

    def test_two_misses_kill_by_default(self) -> None:
        t = HealthTracker(HealthSettings())
        assert t.missed(1.0) == Healthy(misses=1)
        assert t.missed(2.0) == Unhealthy("health check timeout (2 pings unanswered within 3s)")

    def test_one_miss_is_enough_when_configured(self) -> None:
        t = HealthTracker(HealthSettings(deadline=0.5, misses=1))
        assert t.missed(1.0) == Unhealthy("health check timeout (1 ping unanswered within 0.5s)")

    def test_an_answer_resets_the_count(self) -> None:
        t = HealthTracker(HealthSettings(misses=3))
        assert [t.missed(1.0), t.missed(2.0), t.pong(3.0, 2.9), t.missed(4.0)] == [
            Healthy(1),
            Healthy(2),
            Healthy(0),
            Healthy(1),
        ]

    @pytest.mark.parametrize(
        ("answers", "killed_at"),
        [
            ("yyyyyy", None),
            ("ynynyn", None),
            ("ynn", 2),
            ("nn", 1),
            ("ynynnyy", 4),
        ],
    )
    def test_scripted_runs(self, answers: str, killed_at: int | None) -> None:
        """A runner loop over a scripted worker ('y' answers, 'n' stays silent)."""
        s = HealthSettings(interval=5.0, deadline=3.0, misses=2)
        t = HealthTracker(s, started=0.0)
        verdicts: list[Verdict] = []
        for answer in answers:
            due = t.next_ping_at()
            assert due is not None
            t.ping_sent(due)
            if answer == "y":
                verdicts.append(t.pong(due + 0.01, due))
            else:
                answer_by = t.answer_due_by()
                assert answer_by == due + s.deadline
                verdicts.append(t.missed(answer_by))
            if isinstance(verdicts[-1], Unhealthy):
                break
        unhealthy = [i for i, v in enumerate(verdicts) if isinstance(v, Unhealthy)]
        assert unhealthy == ([] if killed_at is None else [killed_at])


class TestSchedule:
    """When pings are due, and what is remembered about answers."""

    def test_first_ping_is_due_at_once_without_a_start(self) -> None:
        t = HealthTracker(HealthSettings())
        assert (t.next_ping_at(), t.answer_due_by()) == (None, None)

    def test_first_ping_one_interval_after_start(self) -> None:
        assert HealthTracker(HealthSettings(interval=2.0), started=100.0).next_ping_at() == 102.0

    def test_pings_are_spaced_from_sending_not_answering(self) -> None:
        t = HealthTracker(HealthSettings(interval=5.0, deadline=3.0), started=0.0)
        t.ping_sent(5.0)
        assert t.answer_due_by() == 8.0
        t.pong(7.5, 5.0)  # a slow answer does not stretch the interval
        assert t.next_ping_at() == 10.0

    def test_rtt_and_last_answer(self) -> None:
        assert HealthTracker(HealthSettings()).last_rtt is None
        t = HealthTracker(HealthSettings())
        t.ping_sent(10.0)
        t.pong(10.25, 10.0)
        assert (t.last_rtt, t.last_pong, t.last_sent) == (0.25, 10.25, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0.0}, "interval"),
        ({"deadline": 0.0}, "deadline"),
        ({"deadline": -1.0}, "deadline"),
        ({"misses": 0}, "misses"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HealthSettings(**kwargs)  # type: ignore[arg-type]


def test_pings_fall_on_a_grid_shared_by_every_worker() -> None:
    from supervisor.rules.health import on_grid

    assert on_grid(10.0, 5.0) == 10.0
    assert on_grid(12.4, 5.0) == 10.0  # nearest: never more than half an interval early
    assert on_grid(12.6, 5.0) == 15.0
    # a ping sent just after a grid point is due exactly on the next one, not one later
    sent = 15.003
    assert on_grid(sent + 5.0, 5.0) == 20.0
    # two workers started at different moments ping at the same instants
    assert on_grid(101.2 + 5.0, 5.0) == on_grid(102.4 + 5.0, 5.0) == 105.0

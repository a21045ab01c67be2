"""The watchdog's pure verdicts: consecutive samples, the CPU window average, reasons,
headroom, sizes."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from supervisor.config import Limits
from supervisor.rules.limits import (
    CPU_WINDOW,
    SAMPLE_PERIOD,
    SAMPLES_OVER,
    Breach,
    History,
    Ok,
    Sample,
    Verdict,
    WatchLimits,
    evaluate,
    format_cpu,
    format_size,
    headroom,
)

MiB = 1 << 20
MEM = WatchLimits(memory=256 * MiB)
PROCS = WatchLimits(processes=16)
CPU = WatchLimits(cpu=0.5)
ALL = WatchLimits(memory=256 * MiB, cpu=0.5, processes=16)


def s(
    rss: int = 0, cpu: float = 0.0, processes: int = 1, at: float = 0.0, open_files: int = 3
) -> Sample:
    return Sample(rss=rss, cpu=cpu, processes=processes, open_files=open_files, at=at)


def run(limits: WatchLimits, samples: list[Sample]) -> list[Verdict]:
    """Feed samples in order, threading the history through, as the watchdog does."""
    history = History()
    verdicts: list[Verdict] = []
    for sample in samples:
        verdict, history = evaluate(sample, limits, history)
        verdicts.append(verdict)
    return verdicts


def rss_series(*mib: float) -> list[Sample]:
    return [s(rss=int(m * MiB), at=i * SAMPLE_PERIOD) for i, m in enumerate(mib)]


def cpu_series(*cores: float, period: float = SAMPLE_PERIOD) -> list[Sample]:
    return [s(cpu=c, at=100.0 + i * period) for i, c in enumerate(cores)]


def kinds(verdicts: list[Verdict]) -> list[str]:
    return [v.kind if isinstance(v, Breach) else "ok" for v in verdicts]


def test_the_documented_figures() -> None:
    """Memory and processes: killed within 0.5 s of crossing; CPU: averaged over 10 s."""
    assert SAMPLES_OVER == 2
    assert SAMPLE_PERIOD == 0.25
    assert SAMPLES_OVER * SAMPLE_PERIOD <= 0.5
    assert CPU_WINDOW == 10.0


class TestMemory:
    """Tree RSS strictly over the limit for SAMPLES_OVER samples in a row is a breach."""

    @pytest.mark.parametrize(
        ("mib", "expected"),
        [
            ((100, 200, 255), ["ok", "ok", "ok"]),  # under
            ((256, 256, 256, 256), ["ok"] * 4),  # at the limit is not over
            ((100, 300, 100, 300, 100), ["ok"] * 5),  # over once at a time: spikes are forgiven
            ((100, 300, 301), ["ok", "ok", "memory"]),  # over twice in a row
            ((300, 301, 302), ["ok", "memory", "memory"]),  # and it stays a breach
            ((300, 100, 300, 301), ["ok", "ok", "ok", "memory"]),  # recovery resets the count
            ((4096, 4096), ["ok", "memory"]),  # an instant jump still needs the second sample
        ],
    )
    def test_sequences(self, mib: tuple[float, ...], expected: list[str]) -> None:
        assert kinds(run(MEM, rss_series(*mib))) == expected

    def test_reason_text(self) -> None:
        verdicts = run(MEM, rss_series(300, 301))
        assert verdicts[-1] == Breach("memory", "memory limit 256MiB exceeded (rss 301MiB)")

    def test_one_byte_over_counts(self) -> None:
        samples = [s(rss=256 * MiB + 1, at=0.0), s(rss=256 * MiB + 1, at=0.25)]
        assert kinds(run(MEM, samples)) == ["ok", "memory"]

    def test_history_counts_consecutive_samples(self) -> None:
        _, h1 = evaluate(s(rss=300 * MiB), MEM, History())
        assert h1.over["memory"] == 1
        _, h2 = evaluate(s(rss=100 * MiB), MEM, h1)
        assert h2.over["memory"] == 0

    def test_unwatched_memory_never_breaches(self) -> None:
        assert kinds(run(WatchLimits(), rss_series(10_000, 10_000, 10_000))) == ["ok"] * 3


class TestProcesses:
    """The number of processes in the tree, like memory: consecutive samples over."""

    @pytest.mark.parametrize(
        ("counts", "expected"),
        [
            ((1, 4, 16), ["ok", "ok", "ok"]),
            ((17, 4, 17, 4), ["ok"] * 4),
            ((17, 23), ["ok", "processes"]),
            ((23, 16, 23, 23), ["ok", "ok", "ok", "processes"]),
        ],
    )
    def test_sequences(self, counts: tuple[int, ...], expected: list[str]) -> None:
        samples = [s(processes=n, at=i * 0.25) for i, n in enumerate(counts)]
        assert kinds(run(PROCS, samples)) == expected

    def test_reason_text(self) -> None:
        samples = [s(processes=20, at=0.0), s(processes=23, at=0.25)]
        assert run(PROCS, samples)[-1] == Breach("processes", "processes limit 16 exceeded (23)")


def cpu_at(*points: tuple[float, float]) -> list[Sample]:
    """Samples at irregular times: (at, cores used since the sample before)."""
    return [s(cpu=c, at=at) for at, c in points]


def first_breach(verdicts: list[Verdict]) -> int | None:
    """The index of the first breach, if any."""
    return next((i for i, kind in enumerate(kinds(verdicts)) if kind != "ok"), None)


WINDOW_SAMPLES = round(CPU_WINDOW / SAMPLE_PERIOD)  # 40 intervals: the 41st sample ends the window


class TestCpu:
    """The time-weighted average over the last CPU_WINDOW seconds, once a whole window has been
    seen, must be over the share; bursts, dips and an average at the share are not a breach."""

    @pytest.mark.parametrize(
        ("samples", "expected"),
        [
            # sustained excess: the breach comes with the sample that completes the window
            pytest.param(cpu_series(*[1.0] * 60), WINDOW_SAMPLES, id="sustained"),
            pytest.param(cpu_series(*[4.0] * 60), WINDOW_SAMPLES, id="sustained-4-cores"),
            pytest.param(cpu_series(*[100.0] * WINDOW_SAMPLES), None, id="short-of-a-window"),
            # one starved sample (and a dip, and one whole second) only lowers the average
            pytest.param(
                cpu_series(*[1.0] * 20, 0.0, *[1.0] * 40), WINDOW_SAMPLES, id="one-starved-sample"
            ),
            pytest.param(
                cpu_series(*[1.0] * 39, 0.1, *[1.0] * 39), WINDOW_SAMPLES, id="dip-before-the-end"
            ),
            pytest.param(
                cpu_series(*[0.6] * 10, *[0.0] * 4, *[0.6] * 46),
                WINDOW_SAMPLES,
                id="starved-for-a-second",
            ),
            # near the share, the starved second delays the breach until it leaves the window
            pytest.param(
                cpu_series(*[0.55] * 10, *[0.0] * 4, *[0.55] * 46), 50, id="starved-near-the-share"
            ),
            # bursts shorter than the window, however hot, are what CPU is for
            pytest.param(cpu_series(0.0, *[4.0] * 4, *[0.0] * 80), None, id="1s-burst-of-4-cores"),
            pytest.param(
                cpu_series(*([0.0] * 30 + [2.0] * 8) * 4), None, id="2s-bursts-every-9.5s"
            ),
            # ... while they fit the window's budget, share × 10 s: 5 CPU-seconds at 50%
            pytest.param(cpu_series(0.0, *[4.0] * 5, *[0.0] * 80), None, id="burst-at-budget"),
            pytest.param(cpu_series(0.0, *[4.0] * 6, *[0.0] * 80), 40, id="burst-over-budget"),
            # spikes over the share with an average under it
            pytest.param(cpu_series(*[0.9, 0.05] * 60), None, id="spiky-average-47.5%"),
            pytest.param(cpu_series(*[0.9, 0.2] * 30), WINDOW_SAMPLES, id="spiky-average-55%"),
            # at the share is not over it
            pytest.param(cpu_series(*[0.5] * 80), None, id="at-the-share"),
            pytest.param(cpu_series(*[0.75, 0.25] * 40), None, id="averaging-the-share"),
            pytest.param(cpu_series(*[0.49] * 80), None, id="just-under"),
            pytest.param(cpu_series(*[0.51] * 80), WINDOW_SAMPLES, id="just-over"),
            # the first sample opens the window; its own cores (the sampler's 0.0) are unused
            pytest.param(cpu_series(99.0, *[0.0] * 60), None, id="first-sample-is-unused"),
        ],
    )
    def test_regular_sweeps(self, samples: list[Sample], expected: int | None) -> None:
        assert first_breach(run(CPU, samples)) == expected

    @pytest.mark.parametrize(
        ("points", "expected"),
        [
            # a slow sweep (2 s apart) still breaches after 10 s: on the sixth sample
            pytest.param([(100.0 + 2 * i, 1.0) for i in range(8)], 5, id="slow-sweep"),
            # weighted by time: 9 s at one core and 1 s idle is 90%, not a mean of 50%
            pytest.param([(0.0, 0.0), (9.0, 1.0), (10.0, 0.0)], 2, id="long-interval-over"),
            # ... and 9 s at 10% with two short spikes is 19%, not a mean of 70%
            pytest.param(
                [(0.0, 0.0), (9.0, 0.1), (9.5, 1.0), (10.0, 1.0)], None, id="short-spikes-under"
            ),
            # an interval that straddles the window's start counts only its part inside:
            # (2, 4] at 150% and (4, 12] at 20% is 46% (over the whole 12 s it would be 63%)
            pytest.param([(0.0, 0.0), (4.0, 1.5), (12.0, 0.2)], None, id="clipped-under"),
            pytest.param([(0.0, 0.0), (4.0, 3.0), (12.0, 0.2)], 2, id="clipped-over"),
            # exactly the share at uneven intervals (float sums are not exact) is not over
            pytest.param(
                [(0.0, 0.0), *((0.1 + 0.3 * i, 0.5) for i in range(40))], None, id="share-uneven"
            ),
            # a stalled watchdog (one 6 s interval) still averages right
            pytest.param(
                [(0.0, 0.0), (0.25, 1.0), (6.25, 0.3), (10.0, 1.0), (10.25, 1.0)],
                3,
                id="stalled-sweep",
            ),
        ],
    )
    def test_irregular_sweeps(
        self, points: list[tuple[float, float]], expected: int | None
    ) -> None:
        assert first_breach(run(CPU, cpu_at(*points))) == expected

    @pytest.mark.parametrize("share", [0.1, 0.3, 1 / 3, 1.1])
    @pytest.mark.parametrize("period", [SAMPLE_PERIOD, 0.1, 1 / 3])
    def test_at_the_share_despite_float_sums(self, share: float, period: float) -> None:
        """A weighted sum of 0.1 × 0.25 forty times is a hair over 1.0: still not over."""
        samples = cpu_series(*[share] * 200, period=period)
        assert first_breach(run(WatchLimits(cpu=share), samples)) is None
        assert first_breach(run(WatchLimits(cpu=share * 0.999), samples)) is not None

    def test_reason_text(self) -> None:
        verdict = run(CPU, cpu_series(*[1.0] * (WINDOW_SAMPLES + 1)))[-1]
        assert verdict == Breach("cpu", "cpu 50% exceeded: 100% average over 10s")
        verdict = run(CPU, cpu_at((0.0, 0.0), (4.0, 3.0), (12.0, 0.2)))[-1]
        assert verdict == Breach("cpu", "cpu 50% exceeded: 76% average over 10s")

    @pytest.mark.parametrize("dip", [1.0, 0.0], ids=["sustained", "one-starved-sample"])
    def test_a_sustained_excess_stays_a_breach(self, dip: float) -> None:
        got = kinds(run(CPU, cpu_series(*[1.0] * 20, dip, *[1.0] * 59)))
        assert got == ["ok"] * WINDOW_SAMPLES + ["cpu"] * 40

    def test_a_breach_ends_when_the_average_falls(self) -> None:
        got = kinds(run(CPU, cpu_series(*[1.0] * 41, *[0.0] * 41)))
        assert got[40:62] == ["cpu"] * 20 + ["ok"] * 2  # 1.0 × 5 s / 10 s is not over 50%

    def test_history_keeps_one_window(self) -> None:
        history = History()
        for sample in cpu_series(*[1.0] * 1000):
            _, history = evaluate(sample, CPU, history)
        assert len(history.cpu) == WINDOW_SAMPLES + 1
        assert history.cpu[0] == (history.cpu[-1][0] - CPU_WINDOW, 1.0)
        assert history.cpu[-1] == (100.0 + 999 * SAMPLE_PERIOD, 1.0)

    def test_history_keeps_the_sample_that_opens_the_window(self) -> None:
        _, h = evaluate(s(cpu=0.0, at=0.0), CPU, History())
        _, h = evaluate(s(cpu=1.0, at=4.0), CPU, h)
        _, h = evaluate(s(cpu=1.0, at=12.0), CPU, h)
        assert h.cpu == ((0.0, 0.0), (4.0, 1.0), (12.0, 1.0))  # 0.0 opens (2, 12]
        _, h = evaluate(s(cpu=1.0, at=14.5), CPU, h)
        assert h.cpu == ((4.0, 1.0), (12.0, 1.0), (14.5, 1.0))

    def test_no_cpu_limit_keeps_no_samples(self) -> None:
        _, h = evaluate(s(cpu=9.0, rss=300 * MiB, at=1.0), MEM, History())
        assert h.cpu == ()

    @pytest.mark.parametrize(
        ("cores", "text"), [(0.5, "50%"), (1.5, "150%"), (0.25, "25%"), (1 / 3, "33.3%")]
    )
    def test_share_format(self, cores: float, text: str) -> None:
        assert format_cpu(cores) == text


class TestSeveralKinds:
    """Each kind keeps its own count; the most urgent breach is named."""

    def test_memory_wins_over_processes_and_cpu(self) -> None:
        hot = s(rss=300 * MiB, cpu=2.0, processes=40)
        history = History(memory_over=1, processes_over=1, cpu=((10.0, 0.0),))
        verdict, new = evaluate(
            Sample(hot.rss, hot.cpu, hot.processes, hot.open_files, at=20.0), ALL, history
        )
        assert verdict == Breach("memory", "memory limit 256MiB exceeded (rss 300MiB)")
        assert new == History(memory_over=2, processes_over=2, cpu=((10.0, 0.0), (20.0, 2.0)))

    def test_cpu_breaches_alone(self) -> None:
        history = History(memory_over=1, processes_over=1, cpu=((10.0, 0.0),))
        verdict, _ = evaluate(s(rss=100 * MiB, cpu=2.0, processes=4, at=20.0), ALL, history)
        assert verdict == Breach("cpu", "cpu 50% exceeded: 200% average over 10s")

    def test_processes_win_over_cpu(self) -> None:
        history = History(processes_over=1, cpu=((10.0, 0.0),))
        verdict, _ = evaluate(s(cpu=2.0, processes=40, at=20.0), ALL, history)
        assert verdict == Breach("processes", "processes limit 16 exceeded (40)")

    def test_counts_are_independent(self) -> None:
        samples = [
            s(rss=300 * MiB, processes=1, at=0.0),
            s(rss=100 * MiB, processes=40, at=0.25),
            s(rss=300 * MiB, processes=1, at=0.5),
            s(rss=100 * MiB, processes=40, at=0.75),
        ]
        assert kinds(run(ALL, samples)) == ["ok"] * 4

    def test_a_second_kind_joins(self) -> None:
        samples = [
            s(rss=300 * MiB, at=0.0),
            s(rss=100 * MiB, processes=40, at=0.25),
            s(rss=300 * MiB, processes=40, at=0.5),
            s(rss=300 * MiB, processes=40, at=0.75),
        ]
        assert kinds(run(ALL, samples)) == ["ok", "ok", "processes", "memory"]


class TestWatchLimits:
    def test_from_config(self) -> None:
        limits = Limits(memory=64 * MiB, cpu=0.5, cpu_time=10.0, open_files=64, processes=8)
        assert WatchLimits.from_config(limits) == WatchLimits(64 * MiB, 0.5, 8)

    def test_kernel_enforced_kinds_are_left_out(self) -> None:
        limits = Limits(memory=64 * MiB, cpu=0.5, processes=8)
        got = WatchLimits.from_config(limits, enforced={"cpu", "processes"})
        assert got == WatchLimits(memory=64 * MiB)

    def test_empty(self) -> None:
        assert WatchLimits.from_config(Limits(cpu_time=5.0, open_files=10)).empty
        assert not WatchLimits(processes=1).empty

    def test_frozen(self) -> None:
        with pytest.raises(FrozenInstanceError):
            History().memory_over = 3  # type: ignore[misc]


class TestHeadroom:
    @pytest.mark.parametrize(
        ("sample", "limits", "expected"),
        [
            (s(rss=128 * MiB, cpu=0.25, processes=4), ALL, (0.5, 0.5, 0.25)),
            (s(rss=512 * MiB, cpu=1.0, processes=32), ALL, (2.0, 2.0, 2.0)),
            (s(rss=128 * MiB, cpu=0.25, processes=4), WatchLimits(), (None, None, None)),
            (s(rss=0, cpu=0.0, processes=1), MEM, (0.0, None, None)),
        ],
    )
    def test_fractions(
        self,
        sample: Sample,
        limits: WatchLimits,
        expected: tuple[float | None, float | None, float | None],
    ) -> None:
        got = headroom(sample, limits)
        assert (got["memory"], got["cpu"], got["processes"]) == expected


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (900, "900B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (1536, "1.5KiB"),
        (64 * MiB, "64MiB"),
        (256 * MiB, "256MiB"),
        (int(301.4 * MiB), "301MiB"),
        (int(9.96 * MiB), "10MiB"),
        (1536 * MiB, "1.5GiB"),
        (4096 * MiB, "4GiB"),
        (3 << 40, "3TiB"),
        (5 << 60, "5120PiB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_ok_is_a_value() -> None:
    assert Ok() == Ok()

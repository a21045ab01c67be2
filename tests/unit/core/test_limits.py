"""The watchdog's pure verdicts: consecutive samples, the CPU window, reasons, headroom, sizes."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from supervisor.config import Limits
from supervisor.core.limits import (
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
    """Memory and processes: killed within 0.5 s of crossing; CPU: 10 s over the share."""
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


class TestCpu:
    """Over the share in every sample for CPU_WINDOW seconds is a breach; busy bursts are not."""

    def over_for(self, seconds: float, cores: float = 1.0) -> list[Sample]:
        n = round(seconds / SAMPLE_PERIOD) + 1  # samples at 0, 0.25, ... seconds
        return cpu_series(*[cores] * n)

    def test_over_for_less_than_the_window(self) -> None:
        assert set(kinds(run(CPU, self.over_for(CPU_WINDOW - SAMPLE_PERIOD)))) == {"ok"}

    def test_over_for_the_window(self) -> None:
        got = kinds(run(CPU, self.over_for(CPU_WINDOW)))
        assert got == ["ok"] * (len(got) - 1) + ["cpu"]

    def test_reason_text(self) -> None:
        verdict = run(CPU, self.over_for(CPU_WINDOW))[-1]
        assert verdict == Breach("cpu", "cpu 50% exceeded for 10s")

    @pytest.mark.parametrize(
        ("cores", "expected"),
        [(0.5, "ok"), (0.49, "ok"), (0.51, "cpu"), (4.0, "cpu")],
    )
    def test_the_share_itself_is_not_over(self, cores: float, expected: str) -> None:
        assert kinds(run(CPU, self.over_for(CPU_WINDOW + 1, cores)))[-1] == expected

    def test_a_dip_restarts_the_window(self) -> None:
        samples = cpu_series(*[1.0] * 39, 0.1, *[1.0] * 39)  # 9.75 s, a dip, 9.75 s
        assert set(kinds(run(CPU, samples))) == {"ok"}

    def test_window_counts_time_not_samples(self) -> None:
        """A slow sweep (2 s apart) still breaches after 10 s, i.e. on the sixth sample."""
        got = kinds(run(CPU, cpu_series(*[1.0] * 7, period=2.0)))
        assert got == ["ok"] * 5 + ["cpu", "cpu"]

    def test_history_remembers_when_the_streak_began(self) -> None:
        _, h = evaluate(s(cpu=1.0, at=42.0), CPU, History())
        _, h = evaluate(s(cpu=1.0, at=42.25), CPU, h)
        assert h.cpu_since == 42.0
        _, h = evaluate(s(cpu=0.0, at=42.5), CPU, h)
        assert h.cpu_since is None

    @pytest.mark.parametrize(
        ("cores", "text"), [(0.5, "50%"), (1.5, "150%"), (0.25, "25%"), (1 / 3, "33.3%")]
    )
    def test_share_format(self, cores: float, text: str) -> None:
        assert format_cpu(cores) == text


class TestSeveralKinds:
    """Each kind keeps its own count; the most urgent breach is named."""

    def test_memory_wins_over_processes_and_cpu(self) -> None:
        hot = s(rss=300 * MiB, cpu=2.0, processes=40)
        history = History(memory_over=1, processes_over=1, cpu_since=0.0)
        verdict, new = evaluate(
            Sample(hot.rss, hot.cpu, hot.processes, hot.open_files, at=20.0), ALL, history
        )
        assert verdict == Breach("memory", "memory limit 256MiB exceeded (rss 300MiB)")
        assert new == History(memory_over=2, processes_over=2, cpu_since=0.0)

    def test_processes_win_over_cpu(self) -> None:
        history = History(processes_over=1, cpu_since=0.0)
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

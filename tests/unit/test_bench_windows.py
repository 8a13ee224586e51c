"""bench's per-window rules: stability, and the give-up limit tune sets to its p99 budget."""

from __future__ import annotations

import pytest

from tsrepo.client.bench import Window, is_stable, over_limit


def _w(throughput: float, p95: float) -> Window:
    return Window(0.0, 1.0, 100, 100, throughput, p95, {}, {})


def test_two_windows_in_a_row_over_the_limit_give_up_unless_the_level_is_recovering():
    assert over_limit([_w(100, 60), _w(100, 70)], 50.0, remaining=4)  # rising: not recovering
    assert over_limit([_w(100, 60), _w(100, 60)], 50.0, remaining=4)
    assert over_limit([_w(100, 10), _w(100, 60), _w(100, 65)], 50.0, remaining=3)  # the last two decide
    # p95 falling with room for three more windows: a transient that may end, so measure on
    assert not over_limit([_w(100, 70), _w(100, 60)], 50.0, remaining=4)
    assert not over_limit([_w(100, 70), _w(100, 60)], 50.0, remaining=3)
    # too few windows left to settle without these two: the level's p99 includes them whatever follows
    assert over_limit([_w(100, 70), _w(100, 60)], 50.0, remaining=2)
    assert over_limit([_w(100, 70), _w(100, 60)], 50.0, remaining=1)


def test_one_window_or_a_window_at_or_under_the_limit_does_not():
    assert not over_limit([_w(100, 90)], 50.0, remaining=5)  # one window may be a transient
    assert not over_limit([_w(100, 60), _w(100, 50)], 50.0, remaining=1)  # at the limit is not over it
    assert not over_limit([_w(100, 60), _w(100, 40)], 50.0, remaining=1)
    assert not over_limit([_w(100, 60), _w(100, 70), _w(100, 40)], 50.0, remaining=1)  # came back under
    assert not over_limit([_w(100, float("nan")), _w(100, 70)], 50.0, remaining=1)  # a window without latencies


def test_no_limit_never_gives_up():
    assert not over_limit([_w(100, 1e9)] * 5, None, remaining=1)


def test_stability_reads_the_last_three_windows():
    assert is_stable([_w(50, 99), _w(100, 10), _w(101, 10.5), _w(99, 9.8)], 0.1)
    assert not is_stable([_w(100, 10), _w(100, 10)], 0.1)
    assert not is_stable([_w(100, 10), _w(130, 10), _w(100, 10)], 0.1)


class _Records:
    successes = 0


class _Load:
    """A load whose completed-request count follows `rate(t)` (requests per second at t seconds)."""

    def __init__(self, rate):
        self.rate, self.records, self.t = rate, _Records(), 0.0

    def done(self) -> bool:
        return False

    async def sleep_watching(self, until: float):
        # integrate the rate from the current time to `until` in 1 ms steps
        while self.t < until - 1e-12:
            dt = min(0.001, until - self.t)
            self.records.successes += self.rate(self.t) * dt
            self.t += dt
        return None


def _warm(rate, warmup=0.3, settle=2.0) -> float:
    import asyncio

    from tsrepo.client.bench import Settings, _warm_up

    load = _Load(rate)
    s = Settings(url="127.0.0.1:1", model="m", warmup=warmup, settle_s=settle)
    asyncio.run(_warm_up(s, load, 0.0, load.sleep_watching))
    return load.t


def test_a_steady_level_warms_up_for_the_warm_up_alone():
    assert _warm(lambda t: 1000.0) == pytest.approx(0.3)
    assert _warm(lambda t: 1000.0, settle=0.0) == pytest.approx(0.3)


def test_warm_up_goes_on_while_throughput_rises_and_stops_once_it_does_not():
    # a fresh instance: 40 % of its speed at first, full speed after 1 s
    ramp = lambda t: 10000.0 * min(1.0, 0.4 + 0.6 * t)
    ended = _warm(ramp)
    assert 1.0 <= ended <= 1.5 + 1e-9, ended
    assert _warm(ramp, settle=0.0) == pytest.approx(0.3)  # without settle_s: the plain warm-up


def test_warm_up_never_goes_past_its_limit():
    assert _warm(lambda t: 1000.0 * (1 + t) ** 3, settle=1.0) <= 1.3 + 1e-9


def test_a_few_completions_per_step_are_not_taken_for_a_rise():
    # one request in flight at 60 ms, steady: 2 completions in the first 0.15 s step, 3 in the second (whole
    # counts; a 50 % "rise" that is only counting)
    class Quantised(_Load):
        async def sleep_watching(self, until: float):
            self.t = until
            self.records.successes = int(until / 0.06 + 1e-9)

    import asyncio

    from tsrepo.client.bench import Settings, _warm_up

    load = Quantised(lambda t: 0.0)
    asyncio.run(_warm_up(Settings(url="127.0.0.1:1", model="m", warmup=0.3, settle_s=2.0), load, 0.0, load.sleep_watching))
    assert load.t == pytest.approx(0.3)

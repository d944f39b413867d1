"""The one bounded memo (memo.py): computed once, bounded, and back after a flood."""

from __future__ import annotations

import sys
import threading

from simpleproxy.memo import Memo


def test_a_key_is_computed_once_and_none_is_a_value() -> None:
    calls: list[str] = []
    memo: Memo[str, str | None] = Memo(lambda key: calls.append(key) or (None if key == "bad" else key.upper()))
    assert [memo["a"], memo["a"], memo["bad"], memo["bad"]] == ["A", "A", None, None]
    assert calls == ["a", "bad"]


def test_when_full_the_oldest_half_goes_and_a_key_in_use_comes_back() -> None:
    calls: list[int] = []
    memo: Memo[int, int] = Memo(lambda key: calls.append(key) or key * 2, limit=8)
    for key in range(8):
        memo[key]
    assert len(memo) == 8
    memo[100]  # full: 0..3 go, 4..7 stay
    assert sorted(memo) == [4, 5, 6, 7, 100]
    for key in range(1000, 1100):  # a flood of invented keys
        memo[key]
        assert len(memo) <= 8
    calls.clear()
    assert memo[4] == 8 and memo[4] == 8 and calls == [4]  # recomputed once, then memoised again


def test_many_threads_missing_and_evicting_at_once_never_fail() -> None:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands as often as they can: races show at once
    memo: Memo[int, int] = Memo(lambda key: key + 1, limit=64)
    failures: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for key in range(20_000):
                assert memo[(key * 7 + offset) % 500] == (key * 7 + offset) % 500 + 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not failures and len(memo) <= 64

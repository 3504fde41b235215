"""retry_on_conflict and retrying: re-run on ConflictError only, bounded, then re-raise."""

from __future__ import annotations

import pytest

import lambdalite
from lambdalite import ConflictError


def test_decorator_retries_conflicts_then_succeeds() -> None:
    calls = []

    @lambdalite.retry_on_conflict(attempts=5, base_delay=0)
    def work() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConflictError("lost")
        return "done"

    assert work() == "done"
    assert len(calls) == 3


def test_decorator_gives_up_with_the_last_conflict() -> None:
    @lambdalite.retry_on_conflict(attempts=2, base_delay=0)
    def work() -> None:
        raise ConflictError("always")

    with pytest.raises(ConflictError):
        work()


def test_decorator_does_not_retry_other_errors() -> None:
    calls = []

    @lambdalite.retry_on_conflict
    def work() -> None:
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        work()
    assert calls == [1]


def test_context_helper_runs_the_block_until_it_succeeds() -> None:
    runs = 0
    for attempt in lambdalite.retrying(attempts=5, base_delay=0):
        with attempt:
            runs += 1
            if runs < 4:
                raise ConflictError("lost")
    assert runs == 4


def test_context_helper_reraises_the_last_conflict() -> None:
    runs = 0
    with pytest.raises(ConflictError):
        for attempt in lambdalite.retrying(attempts=3, base_delay=0):
            with attempt:
                runs += 1
                raise ConflictError("always")
    assert runs == 3


def test_context_helper_lets_other_errors_through() -> None:
    with pytest.raises(KeyError):
        for attempt in lambdalite.retrying(base_delay=0):
            with attempt:
                raise KeyError("bug")


def test_public_names_are_sorted_and_importable() -> None:
    def isort_style(name: str) -> tuple[int, str]:  # constants, then classes, then the rest
        return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)

    assert list(lambdalite.__all__) == sorted(lambdalite.__all__, key=isort_style)
    for name in lambdalite.__all__:
        assert hasattr(lambdalite, name), name


def test_later_attempts_wait_their_turn_at_begin() -> None:
    from lambdalite.scope import wants_immediate

    seen: list[bool] = []

    @lambdalite.retry_on_conflict(base_delay=0)
    def work() -> None:
        seen.append(wants_immediate())
        if len(seen) < 3:
            raise lambdalite.ConflictError("lost")

    work()
    assert seen == [False, True, True]
    assert not wants_immediate()
    blocks: list[bool] = []
    for attempt in lambdalite.retrying(base_delay=0):
        with attempt:
            blocks.append(wants_immediate())
            if len(blocks) < 2:
                raise lambdalite.ConflictError("lost")
    assert blocks == [False, True]
    assert not wants_immediate()

"""sms_core.pool: chunks worked through by worker processes, results in the chunks' order."""

from __future__ import annotations

import functools
import os

import pytest

from sms_core.pool import pooled_map


def offset(state: int, chunk: list[int]) -> tuple[int, list[int]]:
    return os.getpid(), [state + value for value in chunk]


def refuse_three(state: int, chunk: list[int]) -> list[int]:
    if 3 in chunk:
        raise ValueError(f"chunk {chunk} holds 3")
    return chunk


def test_results_come_in_the_chunks_order_from_workers_that_built_their_own_state() -> None:
    chunks = [[i, i + 1] for i in range(0, 40, 2)]
    results = list(pooled_map(offset, chunks, 2, None, functools.partial(int, "100")))
    assert [values for _, values in results] == [[100 + i, 101 + i] for i in range(0, 40, 2)]
    assert os.getpid() not in {pid for pid, _ in results}


def test_one_process_works_in_this_one_on_the_given_state() -> None:
    results = list(pooled_map(offset, [[1], [2]], 1, 10, functools.partial(int, "100")))
    assert results == [(os.getpid(), [11]), (os.getpid(), [12])]


def test_a_workers_exception_is_raised_to_the_caller() -> None:
    with pytest.raises(ValueError, match=r"chunk \[3, 4\] holds 3"):
        list(pooled_map(refuse_three, [[1, 2], [3, 4], [5, 6]], 2, None, functools.partial(int, "0")))

"""CoalescedReads: one read in flight per feature service, the requests that come meanwhile gathered into
the next, each answered with its own rows or its read's error. The reader here is a coroutine that
records its calls and waits for the test's signal; tests/integration/test_coalesced_reads.py runs the
same through Feast and Redis."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sms_api.coalesce import CoalescedReads
from sms_core.prediction import Read

SERVICE: Any = SimpleNamespace(name="sms_service_v2")
OTHER: Any = SimpleNamespace(name="sms_service")


class Reader:
    """Reads that end when the test says: `calls` holds each call's ids."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, ids: list[int], service: Any) -> Read:
        self.calls.append(list(ids))
        await self.release.wait()
        if self.fail_on in ids:
            raise ConnectionError(f"Redis refused the read of {ids}")
        return Read(
            {"message_id": list(ids), "x": [i * 10 for i in ids]},
            {"x": [0] * len(ids)},
            {"x": [1] * len(ids)},
        )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def one_in_flight(reader: Reader, read_s: float = 5) -> tuple[CoalescedReads, asyncio.Task[Read]]:
    """Reads through `reader`, with a lone request's read of id 1 started and waiting for the reader."""
    reads = CoalescedReads(reader, read_s=read_s)
    first = asyncio.create_task(reads.read([1], SERVICE))
    await settle()
    return reads, first


def test_a_lone_request_reads_at_once_and_those_that_come_meanwhile_go_together() -> None:
    async def run() -> None:
        reader = Reader()
        reads, first = await one_in_flight(reader)
        assert reader.calls == [[1]]  # nothing else in flight: read at once, alone
        later = [asyncio.create_task(reads.read(ids, SERVICE)) for ids in ([2, 3], [4], [2])]
        other = asyncio.create_task(reads.read([9], OTHER))  # another service has its own turn
        await settle()
        assert reader.calls == [[1], [9]]
        reader.release.set()
        assert (await first).values == {"message_id": [1], "x": [10]}
        answers = [await task for task in later]
        assert reader.calls == [[1], [9], [2, 3, 4, 2]]  # the three gathered into one read
        assert [a.values["x"] for a in answers] == [[20, 30], [40], [20]]
        assert [a.statuses["x"] for a in answers] == [[1, 1], [1], [1]]
        assert (await other).values["x"] == [90]
        # Idle again: the next lone request reads at once.
        assert (await reads.read([5], SERVICE)).values["x"] == [50]
        assert reader.calls[-1] == [5]

    asyncio.run(run())


def test_a_failed_read_fails_the_requests_in_it_and_no_other() -> None:
    async def run() -> None:
        reader = Reader(fail_on=13)
        reads, first = await one_in_flight(reader)
        gathered = [asyncio.create_task(reads.read(ids, SERVICE)) for ids in ([13], [2])]
        await settle()
        reader.release.set()
        assert (await first).values["x"] == [10]
        for task in gathered:
            with pytest.raises(ConnectionError, match=r"\[13, 2\]"):
                await task
        assert (await reads.read([3], SERVICE)).values["x"] == [30]  # and the reads go on

    asyncio.run(run())


def test_a_request_that_gives_up_leaves_the_others_their_answer() -> None:
    async def run() -> None:
        reader = Reader()
        reads, first = await one_in_flight(reader)
        impatient = asyncio.create_task(reads.read([2], SERVICE))
        patient = asyncio.create_task(reads.read([3], SERVICE))
        await settle()
        impatient.cancel()  # its deadline passed
        reader.release.set()
        await first
        assert (await patient).values["x"] == [30]
        assert impatient.cancelled()

    asyncio.run(run())


def test_a_gathered_read_that_hangs_is_given_up_after_read_s() -> None:
    async def run() -> None:
        reader = Reader()
        reads, first = await one_in_flight(reader, read_s=0.05)
        gathered = asyncio.create_task(reads.read([2], SERVICE))
        await settle()
        first.cancel()  # the lone read's own request gave up; the gathered one starts and hangs
        with pytest.raises(TimeoutError):
            await gathered
        reader.release.set()
        assert (await reads.read([4], SERVICE)).values["x"] == [40]

    asyncio.run(run())

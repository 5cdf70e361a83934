"""Reads of known ids that arrive while one is in flight go to Feast together, in one call.

Feast's `get_online_features_async` costs nearly as much for a few ids as for one (resolving the
feature service's views, building entity keys and the response's protobuf), while Redis reads a
pipeline of keys for about the cost of one. Under load a server therefore spends most of a request in
Feast's set-up. Here at most one read per feature service is in flight: a request that finds none
reads at once, alone, so a lone request waits for nothing; requests that come while a read is in
flight wait for it to end and then go to Feast together, in one read (natural batching, no timer).
Each request gets its own rows of the read, and its own errors: an unknown id fails only the request
that asked for it, a read that fails fails the requests that were in it.

Every read is still Feast's, of Redis, made after the request arrived: nothing is served from memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from feast import FeatureService

from sms_core.prediction import Read

Reader = Callable[[list[int], FeatureService], Awaitable[Read]]


@dataclass
class _Waiting:
    ids: list[int] = field(default_factory=list)
    requests: list[tuple[int, int, asyncio.Future[Read]]] = field(default_factory=list)  # start, stop


class CoalescedReads:
    """Feast reads of known ids, one in flight per feature service, the others gathered behind it.

    `read_s` bounds a gathered read, which runs in a task of its own so that no one request's
    deadline cancels it for the others; each request still waits only until its own deadline.
    """

    def __init__(self, reader: Reader, read_s: float):
        self._reader = reader
        self._read_s = read_s
        self._busy: set[int] = set()  # the services (by id) with a read in flight
        self._waiting: dict[int, _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, message_ids: list[int], service: FeatureService) -> Read:
        # By the service as the request resolved it: after a registry refresh, requests holding the new
        # resolution are read with it, never with the one before.
        key = id(service)
        if key not in self._busy:
            self._busy.add(key)
            try:
                return await self._reader(message_ids, service)
            finally:
                self._next(service)
        waiting = self._waiting.setdefault(key, _Waiting())
        future: asyncio.Future[Read] = asyncio.get_running_loop().create_future()
        start = len(waiting.ids)
        waiting.ids.extend(message_ids)
        waiting.requests.append((start, len(waiting.ids), future))
        return await future

    def _next(self, service: FeatureService) -> None:
        """Start the read of whatever gathered meanwhile, or mark the service idle."""
        waiting = self._waiting.pop(id(service), None)
        if waiting is None:
            self._busy.discard(id(service))
            return
        task = asyncio.get_running_loop().create_task(self._gathered(waiting, service))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gathered(self, waiting: _Waiting, service: FeatureService) -> None:
        try:
            async with asyncio.timeout(self._read_s):
                read = await self._reader(waiting.ids, service)
        except BaseException as exc:
            for _, _, future in waiting.requests:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for start, stop, future in waiting.requests:
                if not future.done():  # a request past its deadline has given up
                    future.set_result(read.rows(start, stop))
        finally:
            self._next(service)

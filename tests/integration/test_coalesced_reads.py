"""Known ids asked for at once, through the API on the real Redis and Postgres: the reads that come while
one is in flight go to Feast together, and every answer is what the same request gets alone."""

import asyncio
from collections import Counter
from typing import Any

import dagster as dg
import httpx
import pytest

from sms_api.app import create_app
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config

pytestmark = pytest.mark.integration

UNKNOWN_ID = 10**12


def test_concurrent_requests_share_reads_and_get_what_each_gets_alone(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    app = create_app(service_config(isolated, log_answers=False))
    with live_server(app) as client:
        reads = app.state.service.reads
        sizes: list[int] = []
        reader = reads._reader

        async def counted(ids: list[int], service: Any) -> Any:
            sizes.append(len(ids))
            return await reader(ids, service)

        reads._reader = counted
        requests: list[tuple[str, dict[str, Any]]] = []
        for i in range(240):
            if i % 6 == 5:  # an unknown id, alone or among known ones
                ids = [UNKNOWN_ID] if i % 12 == 5 else [1 + i, UNKNOWN_ID]
                requests.append(("/predict/batch", {"message_ids": ids}))
            elif i % 3 == 1:
                requests.append(("/predict/batch", {"message_ids": [1 + i, 2 + i, 1 + i]}))
            else:
                requests.append(("/predict", {"message_id": 1 + i}))

        async def at_once() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=24)
            async with httpx.AsyncClient(base_url=client.base_url, limits=limits, timeout=30) as concurrent:
                return await asyncio.gather(*(concurrent.post(path, json=body) for path, body in requests))

        together = asyncio.run(at_once())
        gathered = len(sizes)
        alone = [client.post(path, json=body) for path, body in requests]
    assert Counter(r.status_code for r in together) == {200: 200, 404: 40}
    for (path, body), a, b in zip(requests, together, alone, strict=True):
        assert (a.status_code, a.json()) == (b.status_code, b.json()), (path, body)
    # Fewer Feast reads than requests while they came at once; one read each when they came one by one.
    assert gathered < len(requests)
    assert len(sizes) - gathered == len(requests)

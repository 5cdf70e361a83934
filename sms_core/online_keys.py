"""Which messages Redis holds, and removing chosen ones: what Feast's public API does not offer.

Feast 0.67's Redis store deletes a whole join key's entities (`delete_entity_values`), never chosen ones,
and lists none. Its key for an entity is `serialize_entity_key(entity_key, 3)` followed by the project
name (`feast.infra.online_stores.helpers._redis_key`); `tests/integration/test_online_keys.py` pins that
format against keys Feast itself wrote, so an upgrade that changes it fails there first.
"""

from __future__ import annotations

import re
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import numpy as np
import redis.asyncio
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from sms_core import urls

JOIN_KEY = "message_id"
SERIALIZATION_VERSION = 3  # feature_store.yaml's entity_key_serialization_version
DELETE_CHUNK = 10_000
SCAN_COUNT = 10_000  # keys Redis looks at per SCAN call: few round trips, each a short pause
# Up to this many keys in the database, the project's keys are counted one by one (a SCAN: about 0.3 s
# here); beyond, the database's size (DBSIZE, constant time) bounds them from above, which is exact when
# the database holds this project alone. A million keys take about 1.6 s to SCAN.
EXACT_COUNT_KEYS = 200_000


def entity_key(project: str, message_id: int) -> bytes:
    """The Redis key under which Feast keeps a message's online features."""
    key = EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(int64_val=int(message_id))])
    return (
        serialize_entity_key(key, entity_key_serialization_version=SERIALIZATION_VERSION) + project.encode()
    )


def delete(redis_url: str, project: str, message_ids: Iterable[int]) -> int:
    """Remove the messages' online features; returns how many Redis held."""
    ids = list(message_ids)
    deleted = 0
    with urls.redis_session(redis_url) as client:
        for start in range(0, len(ids), DELETE_CHUNK):
            keys = [entity_key(project, i) for i in ids[start : start + DELETE_CHUNK]]
            deleted += int(client.delete(*keys)) if keys else 0  # type: ignore[arg-type]
    return deleted


def online_ids(redis_url: str, project: str) -> np.ndarray:
    """Every message_id Redis holds features for in this project (a SCAN over its keys), sorted, as
    int64: eight bytes an id, where a set of Python ints would take about sixty."""
    layout = KeyLayout.of(project)
    found = array("q")
    with urls.redis_session(redis_url) as client:
        for key in client.scan_iter(match=layout.pattern(), count=SCAN_COUNT):
            message_id = layout.message_id(key)
            if message_id is not None:
                found.append(message_id)
    return np.unique(np.frombuffer(found, dtype=np.int64))


@dataclass(frozen=True)
class KeyLayout:
    """Where the id sits in this project's entity keys: Feast's fixed layout for one int64 join key,
    read off keys that Feast's own serializer made, so each scanned key is parsed without protobuf."""

    prefix: bytes
    suffix: bytes

    @classmethod
    def of(cls, project: str) -> KeyLayout:
        probe = -0x0123456789ABCDEF  # eight bytes found nowhere else in the key
        value = struct.pack("<q", probe)
        key = entity_key(project, probe)
        prefix, _, suffix = key.partition(value)
        layout = cls(prefix, suffix)
        if suffix != project.encode() or any(
            layout.message_id(entity_key(project, i)) != i for i in (0, 1, -1, 2**62 + 5)
        ):
            raise RuntimeError(f"Feast's entity key layout changed: {key!r} for message_id {probe}")
        return layout

    def pattern(self) -> bytes:
        """A SCAN pattern matching exactly this project's entity keys: the prefix, eight bytes of id,
        the project name (a project whose name merely ends like this one's does not match)."""
        return _glob_literal(self.prefix) + b"?" * 8 + _glob_literal(self.suffix)

    def message_id(self, key: bytes) -> int | None:
        """The message_id in one of this project's entity keys; None for any other key (the
        watermark, or a key of a project whose name merely ends like this one's)."""
        size = len(self.prefix) + 8 + len(self.suffix)
        if len(key) != size or not key.startswith(self.prefix) or not key.endswith(self.suffix):
            return None
        return int.from_bytes(key[len(self.prefix) : len(self.prefix) + 8], "little", signed=True)


def _glob_literal(value: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", value)


def count_held(redis_url: str, project: str) -> tuple[int, bool]:
    """The project's keys in Redis and whether they were counted one by one (see held_keys)."""
    with urls.redis_session(redis_url) as client:
        size = cast(int, client.dbsize())
        if size > EXACT_COUNT_KEYS:
            return size, False
        pattern = KeyLayout.of(project).pattern()
        return sum(1 for _ in client.scan_iter(match=pattern, count=SCAN_COUNT)), True


async def count_held_async(
    client: redis.asyncio.Redis | redis.asyncio.RedisCluster, project: str
) -> tuple[int, bool]:
    """count_held on an asyncio client: the event loop stays free between SCAN calls."""
    size = int(await client.dbsize())
    if size > EXACT_COUNT_KEYS:
        return size, False
    pattern = KeyLayout.of(project).pattern()
    held = 0
    async for _ in client.scan_iter(match=pattern, count=SCAN_COUNT):
        held += 1
    return held, True

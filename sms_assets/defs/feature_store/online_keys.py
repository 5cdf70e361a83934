"""Which messages Redis holds, and removing chosen ones: what Feast's public API does not offer.

Feast 0.67's Redis store deletes a whole join key's entities (`delete_entity_values`), never chosen ones,
and lists none. Its key for an entity is `serialize_entity_key(entity_key, 3)` followed by the project
name (`feast.infra.online_stores.helpers._redis_key`); `tests/integration/test_online_keys.py` pins that
format against keys Feast itself wrote, so an upgrade that changes it fails there first.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from sms_assets.lib import urls

JOIN_KEY = "message_id"
SERIALIZATION_VERSION = 3  # feature_store.yaml's entity_key_serialization_version
DELETE_CHUNK = 10_000


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


def online_ids(redis_url: str, project: str) -> set[int]:
    """Every message_id Redis holds features for in this project (a SCAN over its keys)."""
    suffix = project.encode()
    pattern = b"*" + re.sub(rb"([*?\[\]\\])", rb"\\\1", suffix)
    found: set[int] = set()
    with urls.redis_session(redis_url) as client:
        for key in client.scan_iter(match=pattern, count=10_000):
            message_id = _message_id(key, project)
            if message_id is not None:
                found.add(message_id)
    return found


def _message_id(key: bytes, project: str) -> int | None:
    """The message_id in one of this project's entity keys; None for any other key."""
    try:
        decoded = deserialize_entity_key(key[: -len(project.encode())], SERIALIZATION_VERSION)
    except (struct.error, ValueError, IndexError):  # not an entity key (the watermark, say): not ours
        return None
    if list(decoded.join_keys) != [JOIN_KEY]:
        return None
    message_id = decoded.entity_values[0].int64_val
    # A key of a project whose name merely ends like this one's decodes too, with bytes left over.
    return message_id if entity_key(project, message_id) == key else None

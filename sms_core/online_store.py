"""Whether Redis holds what it must: the sync's watermark, and the messages it must hold by now.

The watermark (the newest change of the offline table that Redis has taken in) is kept in Redis, next
to the rows it describes, so a Redis that lost its data has lost the watermark too: no watermark means
"every row is due", never "nothing to do". Every row of the feature table computed at or before the
watermark must have its key in Redis; a row computed since is on its way with the next sync. Fewer keys
than those rows means keys were lost (a FLUSHDB, a restart without persistence, evicted or deleted
keys), whatever the watermark says: the catch-up sensor then requests a full sync, and `/ready` says so.

Counting is a SCAN of the project's keys (online_keys.count_held) and a count(*) in Postgres. The keys
of rows edited or removed since the watermark are counted too until the next sync, after which the
count is exact again. In a database of more than online_keys.EXACT_COUNT_KEYS keys its size (DBSIZE)
stands for the count: every loss shows when the database holds this project alone, while in one shared
with other data the hourly reconciliation is what finds a partial loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from sms_core.contracts import FEATURE_TABLE, FEATURE_VIEW


def watermark_key(project: str) -> str:
    # Ends with the project name, like Feast's own keys, so a project's keys can be found together.
    return f"sms_assets:online_synced_through:{FEATURE_VIEW}:{project}"


def parse_watermark(value: object) -> datetime | None:
    """The watermark as Redis returned it (bytes, or None when it holds none)."""
    return datetime.fromisoformat(value.decode()) if isinstance(value, bytes) else None


def must_hold_query(watermark: datetime | None) -> tuple[sql.Composed, tuple]:
    """The count of rows whose key Redis must hold, given its watermark, and its parameters."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(FEATURE_TABLE))
    if watermark is None:
        return query, ()
    return query + sql.SQL(" WHERE computed_at <= %s"), (watermark,)


EXISTING_IDS = sql.SQL("SELECT message_id FROM {} WHERE message_id = ANY(%s) ORDER BY message_id").format(
    sql.Identifier(FEATURE_TABLE)
)


@dataclass(frozen=True)
class Holding:
    """How many of the project's messages Redis holds, beside how many it must hold by now."""

    held: int  # counted one by one, or (not exact) at most this many: the database's other keys
    must_hold: int
    watermark: datetime | None
    exact: bool = True

    @classmethod
    def of(cls, keys: int, exact: bool, must_hold: int, watermark: datetime | None) -> Holding:
        """From online_keys.count_held's answer: the database's size counts the watermark too."""
        return cls(keys if exact else max(keys - (watermark is not None), 0), must_hold, watermark, exact)

    @property
    def lost(self) -> int:
        return max(self.must_hold - self.held, 0)

    def describe(self) -> str:
        through = self.watermark.isoformat() if self.watermark else "none (lost or never written)"
        held = f"{self.held:,}" if self.exact else f"at most {self.held:,}"
        return (
            f"Redis holds {held} of the {self.must_hold:,} messages of {FEATURE_TABLE} it must "
            f"hold (synced through {through})"
        )

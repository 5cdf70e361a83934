"""The features group: `sms_features`, the table Feast reads as its offline source."""

import time
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from sms_assets.defs.features.compute import compute_features
from sms_assets.defs.features.schema import FEATURE_NAMES, postgres_columns
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import MESSAGES_SQL, RAW_TABLE, SMS_ARRIVALS, raw_sms_messages
from sms_assets.defs.resources import PostgresResource
from sms_assets.defs.shared import PREVIEW_ROWS, markdown_table
from sms_assets.lib.postgres import count_rows, insert_new, query_frame

FEATURE_TABLE = "sms_features"
FEATURE_CHUNK_ROWS = 50_000
FEATURE_TABLE_COLUMNS = (
    ("message_id", "bigint NOT NULL"),
    ("event_timestamp", "timestamptz NOT NULL"),
    *postgres_columns(),
)

# sms_features follows new messages. It does not wait for ingestions in progress: under a steady stream
# one nearly always is, and the features would starve. Each run computes features for every message
# without them, so an ingestion that ends while the run is under way (which eager counts as handled)
# is covered by the next run, or by the catch-up sensor once the stream stops.
FOLLOW_NEW_MESSAGES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_in_progress())
    .with_label("eager, even while arrivals are being ingested")
)


@dg.asset(
    deps=[raw_sms_messages, SMS_ARRIVALS],
    group_name="features",
    kinds={"postgres", "pandas"},
    description="Text statistics per message, the table Feast reads as its offline source.",
    automation_condition=FOLLOW_NEW_MESSAGES,
)
def sms_features(postgres: PostgresResource) -> dg.MaterializeResult:
    """Engineered features per message, computed by `compute_features` for messages that have none yet.

    A message never changes, so its features are computed once: a run adds the new messages' rows and
    drops rows whose message is gone, and a run with nothing new changes nothing.
    """
    started = time.perf_counter()
    with postgres.connect() as conn:
        batches.ensure_tables(conn)
        conn.execute(FEATURE_TABLE_DDL)  # type: ignore[arg-type]
    with postgres.connect() as source, postgres.connect() as target:
        with target.transaction():
            removed = target.execute(DROP_ORPHAN_FEATURES_SQL).rowcount  # type: ignore[arg-type]
            added = insert_new(
                target,
                FEATURE_TABLE,
                [name for name, _ in FEATURE_TABLE_COLUMNS],
                _feature_rows(source, NEW_MESSAGES_SQL),
            )
        count = count_rows(target, FEATURE_TABLE)
        means = query_frame(
            target,
            "SELECT "
            + ", ".join(f"avg({c})::float8 AS {c}" for c in FEATURE_NAMES)
            + f" FROM {FEATURE_TABLE}",
        )
        preview = query_frame(
            target,
            f"SELECT * FROM {FEATURE_TABLE} ORDER BY event_timestamp DESC, message_id LIMIT {PREVIEW_ROWS}",
        )
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "rows_added": added,
            "rows_removed": removed,
            "feature_means": markdown_table(means.round(4)),
            "preview": markdown_table(preview),
            "seconds": round(seconds, 3),
            "rows_per_second": round(added / seconds) if seconds else 0,
        }
    )


FEATURE_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {FEATURE_TABLE} ("
    + ", ".join(f"{name} {type_}" for name, type_ in FEATURE_TABLE_COLUMNS)
    + ", PRIMARY KEY (message_id))"
)
NEW_MESSAGES_SQL = (
    f"SELECT m.message_id, m.event_timestamp, m.text FROM ({MESSAGES_SQL}) AS m "
    f"WHERE NOT EXISTS (SELECT 1 FROM {FEATURE_TABLE} f WHERE f.message_id = m.message_id)"
)
DROP_ORPHAN_FEATURES_SQL = (
    f"DELETE FROM {FEATURE_TABLE} f "
    f"WHERE NOT EXISTS (SELECT 1 FROM {RAW_TABLE} r WHERE r.message_id = f.message_id) "
    f"AND NOT EXISTS (SELECT 1 FROM {batches.MESSAGES_TABLE} a WHERE a.message_id = f.message_id)"
)


def _feature_rows(conn: Any, query: str) -> Iterator[Sequence[Any]]:
    """Feature rows for the messages `query` selects, read through a server-side cursor in chunks."""
    with conn.cursor(name="raw_messages") as cursor:
        cursor.execute(query)
        while chunk := cursor.fetchmany(FEATURE_CHUNK_ROWS):
            frame = pd.DataFrame(chunk, columns=["message_id", "event_timestamp", "text"])
            features = compute_features(frame["text"])
            yield from zip(
                frame["message_id"].tolist(),
                frame["event_timestamp"].tolist(),
                *(features[c].tolist() for c in FEATURE_NAMES),
                strict=True,
            )

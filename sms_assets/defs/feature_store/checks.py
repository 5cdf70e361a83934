"""Checks of the feature_store group: Redis against Postgres, request-time features against the batch."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from sms_assets.defs import check_passes
from sms_assets.defs.feature_store.assets import feast_registry, online_store
from sms_assets.defs.features.table import FEATURE_TABLE
from sms_assets.defs.ingestion.assets import MESSAGES_SQL
from sms_assets.defs.resources import FeastResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL
from sms_core.contracts import TEXT_FEATURE_VIEW, TEXT_VIEW_FEATURES, VIEW_FEATURES
from sms_core.features.comparison import FIRST_IDS, first_ids, mismatches
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import id_array, query_chunks

if TYPE_CHECKING:
    from feast import FeatureStore

REQUEST_CHUNK = 1_000
# Distinct pairs of text and batch row compared per chunk by request_features_match_batch.
CHECK_CHUNK = 50_000


# Each message's current text beside its batch row, grouped: the messages that share a text and a row
# share the request path's answer too. A row computed from another text, or one edited by hand, forms
# a pair of its own.
# An incremental pass takes the messages of its ids alone (`where`, on r.message_id).
def distinct_pairs_sql(where: str = "") -> str:
    columns = ", ".join(f"f.{c}" for c in FEATURE_NAMES)
    return (
        f"SELECT r.text, {columns}, count(*) AS messages, min(message_id) AS first_id "
        f"FROM ({MESSAGES_SQL}) r JOIN {FEATURE_TABLE} f USING (message_id) {where} "
        f"GROUP BY r.text, {columns} ORDER BY first_id"
    )


DISTINCT_PAIRS_SQL = distinct_pairs_sql()


@dg.asset_check(
    asset=online_store,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "Redis holds exactly the messages of the offline feature table, with their offline values. A "
        "full pass compares every id both ways and every row's values; an incremental pass (check_passes) "
        "the rows changed since the last passing one, the messages removed since, a seeded sample of the "
        "others, and how many keys Redis holds against how many it must."
    ),
)
def online_matches_offline(
    context: dg.AssetCheckExecutionContext,
    config: check_passes.PassConfig,
    feast: FeastResource,
    postgres: PostgresResource,
) -> dg.AssetCheckResult:
    # The key listing imports Feast: in the check, not at load.
    from sms_assets.defs.feature_store.online_sync import holding
    from sms_core import online_keys

    store = feast.store()
    redis_url = feast.redis.resolved_url()
    compared = Compared()
    with postgres.connect() as conn:
        pass_ = check_passes.plan(context, config, conn)
        if pass_.full:
            offline_ids = id_array(conn, f"SELECT message_id FROM {FEATURE_TABLE} ORDER BY message_id")
            held = online_keys.online_ids(redis_url, store.project)
            only_online = np.setdiff1d(held, offline_ids, assume_unique=True)
            only_offline = np.setdiff1d(offline_ids, held, assume_unique=True)
            counts = {"offline_messages": len(offline_ids), "online_messages": len(held)}
            for rows in query_chunks(conn, f"SELECT * FROM {FEATURE_TABLE} ORDER BY message_id", CHECK_CHUNK):
                compared.add(store, rows)
            changed, sampled = len(offline_ids), 0
        else:
            holds = holding(conn, redis_url, store.project)
            removed = pass_.removed_ids(conn)
            only_online = np.array(still_online(store, removed), dtype=np.int64)
            only_offline = np.array([], dtype=np.int64)
            counts = {"offline_messages": holds.must_hold, "online_messages": holds.held, "lost": holds.lost}
            changed_ids, sample_ids = pass_.changed_ids(conn), pass_.sample_ids(conn)
            ids = np.concatenate([changed_ids, sample_ids]).tolist()
            query = f"SELECT * FROM {FEATURE_TABLE} WHERE message_id = ANY(%s) ORDER BY message_id"
            for rows in query_chunks(conn, query, CHECK_CHUNK, [ids]):
                compared.add(store, rows)
            changed, sampled = len(changed_ids) + len(removed), len(sample_ids)
    return dg.AssetCheckResult(
        passed=(
            len(only_online) == 0
            and len(only_offline) == 0
            and counts.get("lost", 0) == 0
            and not compared.absent
            and not compared.mismatched
        ),
        metadata={
            **counts,
            "online_not_offline": len(only_online),
            "first_online_not_offline_ids": dg.MetadataValue.json(first_ids(only_online)),
            "offline_not_online": len(only_offline),
            "first_offline_not_online_ids": dg.MetadataValue.json(first_ids(only_offline)),
            "rows_compared": compared.rows,
            "missing_online": len(compared.absent),
            "first_missing_online_ids": dg.MetadataValue.json(first_ids(np.array(compared.absent))),
            "mismatched": len(compared.mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(np.array(compared.mismatched))),
            "max_difference": dg.MetadataValue.json(compared.max_difference),
            **pass_.metadata(changed, sampled),
        },
    )


@dataclass
class Compared:
    """Offline rows beside what Feast reads from Redis for them, added up over the chunks of a pass."""

    rows: int = 0
    absent: list[int] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)
    max_difference: dict[str, float] = field(default_factory=dict)

    def add(self, store: "FeatureStore", offline: pd.DataFrame) -> None:
        if offline.empty:
            return
        offline = offline.set_index("message_id")
        ids = [int(i) for i in offline.index]
        online = read_online(store, ids)
        absent = online.index[online[list(FEATURE_NAMES)].isna().all(axis=1)]
        present = online.drop(index=absent)
        differs, difference = mismatches(present, offline.loc[present.index])
        self.rows += len(ids)
        self.absent += [int(i) for i in absent]
        self.mismatched += [int(i) for i in present.index[differs.to_numpy()]]
        for column, value in difference.items():
            self.max_difference[column] = max(self.max_difference.get(column, 0.0), value)


def read_online(store: "FeatureStore", ids: list[int]) -> pd.DataFrame:
    """What Feast reads from Redis for `ids`, in calls of a size one request could carry."""
    rows = [{"message_id": i} for i in ids]
    read = store.get_online_features
    chunks = [
        read(features=VIEW_FEATURES, entity_rows=rows[start : start + REQUEST_CHUNK]).to_df()
        for start in range(0, len(rows), REQUEST_CHUNK)
    ]
    return pd.concat(chunks).set_index("message_id").loc[ids]


def still_online(store: "FeatureStore", removed: np.ndarray) -> list[int]:
    """The removed messages Redis still holds features for."""
    if len(removed) == 0:
        return []
    online = read_online(store, [int(i) for i in removed])
    return [int(i) for i in online.index[online[list(FEATURE_NAMES)].notna().any(axis=1)]]


@dg.asset_check(
    asset=feast_registry,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "For every message, every feature Feast computes from its text at request time "
        "(sms_text_features, what each text service reads) equals its row in the batch feature table. "
        "The request path reads nothing but the text, so each distinct pair of text and batch row is "
        "computed once and stands for all of its messages. An incremental pass (check_passes) takes "
        "the messages changed since the last passing one and a seeded sample of the others."
    ),
)
def request_features_match_batch(
    context: dg.AssetCheckExecutionContext,
    config: check_passes.PassConfig,
    feast: FeastResource,
    postgres: PostgresResource,
) -> dg.AssetCheckResult:
    from sms_core import prediction

    store = feast.store()
    compared = mismatched = distinct = 0
    first_mismatched: list[int] = []
    max_difference: dict[str, float] = {}
    with postgres.connect() as conn:
        pass_ = check_passes.plan(context, config, conn)
        if pass_.full:
            query, params, changed, sampled = DISTINCT_PAIRS_SQL, None, 0, 0
        else:
            changed_ids, sample_ids = pass_.changed_ids(conn), pass_.sample_ids(conn)
            ids = np.concatenate([changed_ids, sample_ids]).tolist()
            query, params = distinct_pairs_sql("WHERE r.message_id = ANY(%s)"), [ids]
            changed, sampled = len(changed_ids), len(sample_ids)
        # A chunk of distinct pairs at a time: memory holds one chunk's texts, whatever the table's size.
        for batch in query_chunks(conn, query, CHECK_CHUNK, params):
            texts = batch["text"].tolist()
            # The serving path itself, in calls of a size one request could carry.
            request = pd.concat(
                [
                    pd.DataFrame(
                        prediction.text_features(
                            store, texts[start : start + REQUEST_CHUNK], TEXT_VIEW_FEATURES
                        )
                    )
                    for start in range(0, len(texts), REQUEST_CHUNK)
                ],
                ignore_index=True,
            )
            differs, difference = mismatches(request, batch)
            wrong = batch[differs.to_numpy()]
            distinct += len(batch)
            compared += int(batch["messages"].sum())
            mismatched += int(wrong["messages"].sum())
            first_mismatched = sorted(first_mismatched + first_ids(wrong["first_id"]))[:FIRST_IDS]
            for column, value in difference.items():
                max_difference[column] = max(max_difference.get(column, 0.0), value)
    return dg.AssetCheckResult(
        passed=(compared > 0 or not pass_.full) and mismatched == 0,
        metadata={
            "messages_compared": compared,
            "distinct_pairs_computed": distinct,
            "mismatched": mismatched,
            # The first message of each mismatched pair of text and row.
            "first_mismatched_ids": dg.MetadataValue.json(first_mismatched),
            "max_difference": dg.MetadataValue.json(max_difference),
            "feature_view": TEXT_FEATURE_VIEW,
            **pass_.metadata(changed if not pass_.full else compared, sampled),
        },
    )

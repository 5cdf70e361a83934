"""Checks of the feature_store group: Redis against Postgres, request-time features against the batch."""

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from sms_assets.defs import check_passes
from sms_assets.defs.feature_store.assets import feast_registry, online_store
from sms_assets.defs.features.table import FEATURE_TABLE
from sms_assets.defs.ingestion.assets import MESSAGES_SQL
from sms_assets.defs.resources import FeastResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL
from sms_core import feast_config
from sms_core.contracts import TEXT_FEATURE_VIEW
from sms_core.features.comparison import first_ids
from sms_core.features.schema import FEATURE_NAMES
from sms_core.features.store_comparison import (
    Compared,
    PairsCompared,
    compare_pairs,
    compare_rows,
    still_online,
)
from sms_core.postgres import id_array, query_chunks

if TYPE_CHECKING:
    from feast import FeatureStore

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
            chunks = query_chunks(conn, f"SELECT * FROM {FEATURE_TABLE} ORDER BY message_id", CHECK_CHUNK)
            for part in pass_.map(compare_rows, chunks, store, same_store(feast)):
                compared.merge(part)
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
                compared.merge(compare_rows(store, rows))
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


def same_store(feast: FeastResource) -> Callable[[], "FeatureStore"]:
    """How a worker process builds the check's feature store for itself."""
    postgres, redis = feast.postgres.resolved_url(), feast.redis.resolved_url()
    return functools.partial(feast_config.feature_store, postgres, redis, feast.project_name())


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
    store = feast.store()
    pairs = PairsCompared()
    with postgres.connect() as conn:
        pass_ = check_passes.plan(context, config, conn)
        if pass_.full:
            query, params, changed, sampled = DISTINCT_PAIRS_SQL, None, 0, 0
        else:
            changed_ids, sample_ids = pass_.changed_ids(conn), pass_.sample_ids(conn)
            ids = np.concatenate([changed_ids, sample_ids]).tolist()
            query, params = distinct_pairs_sql("WHERE r.message_id = ANY(%s)"), [ids]
            changed, sampled = len(changed_ids), len(sample_ids)
        # A few chunks of distinct pairs at a time: memory holds their texts, whatever the table's size.
        chunks = query_chunks(conn, query, CHECK_CHUNK, params)
        for part in pass_.map(compare_pairs, chunks, store, same_store(feast)):
            pairs.merge(part)
    return dg.AssetCheckResult(
        passed=(pairs.messages > 0 or not pass_.full) and pairs.mismatched == 0,
        metadata={
            "messages_compared": pairs.messages,
            "distinct_pairs_computed": pairs.distinct,
            "mismatched": pairs.mismatched,
            # The first message of each mismatched pair of text and row.
            "first_mismatched_ids": dg.MetadataValue.json(pairs.first_mismatched),
            "max_difference": dg.MetadataValue.json(pairs.max_difference),
            "feature_view": TEXT_FEATURE_VIEW,
            **pass_.metadata(changed if not pass_.full else pairs.messages, sampled),
        },
    )

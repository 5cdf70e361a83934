"""Checks of the feature_store group: Redis against Postgres, request-time features against the batch."""

import dagster as dg
import numpy as np
import pandas as pd

from sms_assets.defs.feature_store.assets import feast_registry, online_store
from sms_assets.defs.features.table import FEATURE_TABLE
from sms_assets.defs.ingestion.assets import MESSAGES_SQL
from sms_assets.defs.resources import FeastResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL
from sms_core.contracts import TEXT_FEATURE_VIEW, TEXT_VIEW_FEATURES, VIEW_FEATURES
from sms_core.features.comparison import FIRST_IDS, first_ids, mismatches
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import id_array, query_chunks, query_frame

ONLINE_SAMPLE_SIZE = 1_000
REQUEST_CHUNK = 1_000
# Distinct pairs of text and batch row compared per chunk by request_features_match_batch.
CHECK_CHUNK = 50_000
# Each message's current text beside its batch row, grouped: the messages that share a text and a row
# share the request path's answer too. A row computed from another text, or one edited by hand, forms
# a pair of its own.
DISTINCT_PAIRS_SQL = (
    f"SELECT r.text, {', '.join(f'f.{c}' for c in FEATURE_NAMES)}, "
    "count(*) AS messages, min(message_id) AS first_id "
    f"FROM ({MESSAGES_SQL}) r JOIN {FEATURE_TABLE} f USING (message_id) "
    f"GROUP BY r.text, {', '.join(f'f.{c}' for c in FEATURE_NAMES)} ORDER BY first_id"
)


@dg.asset_check(
    asset=online_store,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "Redis holds exactly the messages of the offline feature table, no more and no fewer (every id "
        "compared both ways, and the counts), and for a random sample exactly their offline values."
    ),
)
def online_matches_offline(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    # The key listing imports Feast: in the check, not at load.
    from sms_core import online_keys

    store = feast.store()
    with postgres.connect() as conn:
        offline_ids = id_array(conn, f"SELECT message_id FROM {FEATURE_TABLE} ORDER BY message_id")
        sample = query_frame(
            conn, f"SELECT * FROM {FEATURE_TABLE} ORDER BY random() LIMIT {ONLINE_SAMPLE_SIZE}"
        ).set_index("message_id")
    held = online_keys.online_ids(feast.redis.resolved_url(), store.project)
    only_online = np.setdiff1d(held, offline_ids, assume_unique=True)
    only_offline = np.setdiff1d(offline_ids, held, assume_unique=True)
    ids = [int(i) for i in sample.index]
    online = store.get_online_features(
        features=VIEW_FEATURES, entity_rows=[{"message_id": i} for i in ids]
    ).to_df()
    online = online.set_index("message_id").loc[ids]
    absent = online.index[online[list(FEATURE_NAMES)].isna().all(axis=1)]
    present = online.drop(index=absent)
    differs, max_difference = mismatches(present, sample.loc[present.index])
    mismatched = present.index[differs.to_numpy()]
    return dg.AssetCheckResult(
        passed=len(only_online) == 0 and len(only_offline) == 0 and len(absent) == 0 and len(mismatched) == 0,
        metadata={
            "offline_messages": len(offline_ids),
            "online_messages": len(held),
            "online_not_offline": len(only_online),
            "first_online_not_offline_ids": dg.MetadataValue.json(first_ids(only_online)),
            "offline_not_online": len(only_offline),
            "first_offline_not_online_ids": dg.MetadataValue.json(first_ids(only_offline)),
            "sampled_ids": len(ids),
            "sample_missing_online": len(absent),
            "mismatched": len(mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(mismatched)),
            "max_difference": dg.MetadataValue.json(max_difference),
        },
    )


@dg.asset_check(
    asset=feast_registry,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "For every message, every feature Feast computes from its text at request time "
        "(sms_text_features, what each text service reads) equals its row in the batch feature table. "
        "The request path reads nothing but the text, so each distinct pair of text and batch row is "
        "computed once and stands for all of its messages."
    ),
)
def request_features_match_batch(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    from sms_core import prediction

    store = feast.store()
    compared = mismatched = distinct = 0
    first_mismatched: list[int] = []
    max_difference: dict[str, float] = {}
    with postgres.connect() as conn:
        # A chunk of distinct pairs at a time: memory holds one chunk's texts, whatever the table's size.
        for batch in query_chunks(conn, DISTINCT_PAIRS_SQL, CHECK_CHUNK):
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
        passed=compared > 0 and mismatched == 0,
        metadata={
            "messages_compared": compared,
            "distinct_pairs_computed": distinct,
            "mismatched": mismatched,
            # The first message of each mismatched pair of text and row.
            "first_mismatched_ids": dg.MetadataValue.json(first_mismatched),
            "max_difference": dg.MetadataValue.json(max_difference),
            "feature_view": TEXT_FEATURE_VIEW,
        },
    )

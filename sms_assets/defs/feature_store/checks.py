"""Checks of the feature_store group: Redis against Postgres, request-time features against the batch."""

import dagster as dg
import pandas as pd

from sms_api import prediction
from sms_assets.defs.feature_store.assets import feast_registry, online_store
from sms_assets.defs.features.assets import FEATURE_TABLE
from sms_assets.defs.features.comparison import first_ids, mismatches
from sms_assets.defs.features.schema import FEATURE_NAMES
from sms_assets.defs.ingestion.assets import RAW_TABLE
from sms_assets.defs.resources import FeastResource, PostgresResource
from sms_assets.lib.feast_config import FEATURE_SERVICE, TEXT_FEATURE_SERVICE
from sms_assets.lib.postgres import query_frame

ONLINE_SAMPLE_SIZE = 1_000
REQUEST_CHUNK = 1_000
# Latest feature row per message: the value Redis must hold after materialization.
LATEST_FEATURES_SQL = (
    f"SELECT DISTINCT ON (message_id) * FROM {FEATURE_TABLE} ORDER BY message_id, event_timestamp DESC"
)


@dg.asset_check(
    asset=online_store,
    description="For a random sample of message ids, Redis holds exactly the latest offline feature row.",
)
def online_matches_offline(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        offline = query_frame(
            conn, f"SELECT * FROM ({LATEST_FEATURES_SQL}) latest ORDER BY random() LIMIT {ONLINE_SAMPLE_SIZE}"
        ).set_index("message_id")
    ids = [int(i) for i in offline.index]
    store = feast.store()
    online = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=[{"message_id": i} for i in ids]
    ).to_df()
    online = online.set_index("message_id").loc[ids]
    absent = online.index[online[list(FEATURE_NAMES)].isna().all(axis=1)]
    present = online.drop(index=absent)
    differs, max_difference = mismatches(present, offline.loc[present.index])
    mismatched = present.index[differs.to_numpy()]
    return dg.AssetCheckResult(
        passed=len(absent) == 0 and len(mismatched) == 0,
        metadata={
            "sampled_ids": len(ids),
            "missing_online": len(absent),
            "first_missing_ids": dg.MetadataValue.json(first_ids(absent)),
            "mismatched": len(mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(mismatched)),
            "max_difference": dg.MetadataValue.json(max_difference),
        },
    )


@dg.asset_check(
    asset=feast_registry,
    description=(
        "For every message, the features Feast computes from its text at request time "
        "(sms_text_service) equal its row in the batch feature table."
    ),
)
def request_features_match_batch(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        batch = query_frame(
            conn,
            f"SELECT message_id, r.text, {', '.join(f'f.{c}' for c in FEATURE_NAMES)} "
            f"FROM {RAW_TABLE} r JOIN ({LATEST_FEATURES_SQL}) f USING (message_id) ORDER BY message_id",
        ).set_index("message_id")
    store = feast.store()
    texts = batch["text"].tolist()
    # The serving path itself, in chunks of a size one request could carry.
    chunks = [
        pd.DataFrame(prediction.text_features(store, texts[start : start + REQUEST_CHUNK]))
        for start in range(0, len(texts), REQUEST_CHUNK)
    ]
    request = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame({c: [] for c in FEATURE_NAMES})
    request.index = batch.index
    differs, max_difference = mismatches(request, batch)
    mismatched = batch.index[differs.to_numpy()]
    return dg.AssetCheckResult(
        passed=len(batch) > 0 and len(mismatched) == 0,
        metadata={
            "messages_compared": len(batch),
            "mismatched": len(mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(mismatched)),
            "max_difference": dg.MetadataValue.json(max_difference),
            "feature_service": TEXT_FEATURE_SERVICE,
        },
    )

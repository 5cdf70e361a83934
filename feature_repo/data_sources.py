from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)

from sms_core.contracts import FEATURE_TABLE

# The table the `sms_features` Dagster asset writes; Feast reads it as the offline source.
sms_features_source = PostgreSQLSource(
    name="sms_features_source",
    table=FEATURE_TABLE,
    timestamp_field="event_timestamp",
    description="Engineered features per message, one row per message at its arrival time.",
)

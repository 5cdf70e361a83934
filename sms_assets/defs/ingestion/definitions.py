import dagster as dg

from sms_assets.defs.ingestion.assets import ingest_arrivals, raw_sms_messages
from sms_assets.defs.ingestion.sensors import arrivals_job, arrivals_sensor

defs = dg.Definitions(
    assets=[raw_sms_messages, ingest_arrivals], jobs=[arrivals_job], sensors=[arrivals_sensor]
)

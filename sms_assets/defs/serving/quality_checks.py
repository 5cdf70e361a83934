"""The check that each served model version answers as well live, once labels come in, as it did on its
held-out messages; spam_model, retrained nightly, records its latest verdict (shared.live_quality)."""

from typing import Any

import dagster as dg
import pandas as pd

from sms_assets.defs.ingestion import batches
from sms_assets.defs.resources import ModelStoreResource, PostgresResource
from sms_assets.defs.serving.served_log import served_log
from sms_assets.defs.shared import LIVE_QUALITY_CHECK, SERVED_LOG_POOL
from sms_core.postgres import query_frame, table_exists
from sms_core.served_log import quality
from sms_core.served_log.intake import ANSWERS_TABLE

WINDOW = "30 days"
# Served answers whose label has come in: an answer by id through the arrival's message_id, an answer by
# text through its text's sha256 (a text scored before it arrived), when that text has one label only.
LABELLED_ANSWERS_SQL = f"""
    WITH by_text AS (
        SELECT encode(sha256(convert_to(a.text, 'UTF8')), 'hex') AS text_sha256, min(l.label) AS label
        FROM {batches.MESSAGES_TABLE} a JOIN {batches.LABELS_TABLE} l USING (message_id)
        GROUP BY 1 HAVING count(DISTINCT l.label) = 1
    )
    SELECT s.model_version, s.request_form, s.label AS served_label,
           coalesce(l.label, t.label) AS true_label
    FROM {ANSWERS_TABLE} s
    LEFT JOIN {batches.LABELS_TABLE} l ON s.request_form = 'id' AND l.message_id = s.message_id
    LEFT JOIN by_text t ON s.request_form = 'text' AND t.text_sha256 = s.text_sha256
    WHERE s.served_at > now() - interval '{WINDOW}' AND coalesce(l.label, t.label) IS NOT NULL
"""


@dg.asset_check(
    asset=served_log,
    name=LIVE_QUALITY_CHECK.name,
    pool=SERVED_LOG_POOL,
    description=(
        "For each model version that served answers in the last 30 days whose label has come in "
        "(sms_arrival_labels, by id or by the text's sha256), its live F1 of the spam class is no more "
        f"than {quality.MARGIN} below the F1 on its held-out messages (its manifest), judged from "
        f"{quality.MIN_LABELLED} labelled answers with {quality.MIN_EACH} of each class. spam_model "
        "records the latest verdict."
    ),
)
def served_quality_holds(postgres: PostgresResource, model_store: ModelStoreResource) -> dg.AssetCheckResult:
    from sms_core.model.store import ModelStoreError

    store = model_store.model_store()

    def held_out(version: str) -> dict[str, Any] | None:
        try:
            return store.manifest(version).get("metrics")
        except ModelStoreError:
            return None

    with postgres.connect() as conn:
        batches.ensure_tables(conn)
        ready = table_exists(conn, ANSWERS_TABLE)
        labelled = query_frame(conn, LABELLED_ANSWERS_SQL) if ready else pd.DataFrame()
    versions = quality.by_version(labelled, held_out) if len(labelled) else []
    dropped = [v.version for v in versions if v.dropped]
    table = pd.DataFrame([v.as_row() for v in versions])
    return dg.AssetCheckResult(
        passed=not dropped,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "labelled_answers": len(labelled),
            "by_version": dg.MetadataValue.md(
                table.to_markdown(index=False) if len(table) else "no labels yet"
            ),
            "live_f1": dg.MetadataValue.json({v.version: round(v.f1, 4) for v in versions}),
            "dropped_versions": dg.MetadataValue.json(dropped),
            "margin": quality.MARGIN,
        },
    )

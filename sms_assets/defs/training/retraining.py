"""When spam_model retrains, and when the candidate it saved last still stands.

Training reads every row of the training set, so its cost grows with the table, not with the change. On
a small training set (fewer than `retrain_every_change_below_rows` rows) every change retrains: it costs
seconds. On a large one, a run retrains once `retrain_share` of the training rows changed since the
candidate was trained (rows added, removed or changed, as each training_set materialization counts
them in its `rows_changed`), or when the feature service, the features, the hyper-parameters or the
training code differ from the candidate's; short of that, the candidate stands and the materialization
says why. The nightly retrain (retrain_job) sets `retrain_share` to 0, so any change is trained on within
a day, as the nightly full check verifies every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import dagster as dg
from pydantic import Field

from sms_core.model.store import ModelStore, ModelStoreError, ModelVersion

# Config fields that decide whether to train, not how: left out of the model's hyper-parameters.
POLICY_FIELDS = {"retrain_share", "retrain_every_change_below_rows"}
ROWS_CHANGED = "rows_changed"
HISTORY = 1_000  # training_set materializations looked through since the candidate was trained


class RetrainPolicy(dg.Config):
    retrain_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="On a large training set, retrain once this share of its rows changed since the "
        "candidate was trained (0: on any change; the nightly retrain_job uses 0).",
    )
    retrain_every_change_below_rows: int = Field(
        default=100_000, ge=0, description="A training set of fewer rows is retrained on any change."
    )


def standing_candidate(
    instance: dg.DagsterInstance,
    model_key: dg.AssetKey,
    training_key: dg.AssetKey,
    store: ModelStore,
    policy: RetrainPolicy,
    wanted: Mapping[str, Any],
) -> tuple[ModelVersion, str] | None:
    """The candidate spam_model saved last and why it stands ("kept: ..."), when this run need not
    retrain; else None.
    `wanted`: the manifest fields a candidate must share with the model this run would train."""
    event = instance.get_latest_materialization_event(model_key)
    materialization = event.asset_materialization if event else None
    if materialization is None or "version" not in materialization.metadata:
        return None
    try:
        candidate = store.load(str(materialization.metadata["version"].value))
    except ModelStoreError:
        return None
    manifest = candidate.manifest
    rows = int(manifest.get("training_rows", 0))
    if rows < policy.retrain_every_change_below_rows or "trained_at" not in manifest:
        return None
    if any(manifest.get(name) != value for name, value in wanted.items()):
        return None
    trained_at = datetime.fromisoformat(manifest["trained_at"])
    since = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=training_key, after_timestamp=trained_at.timestamp()), limit=HISTORY
    )
    counts = [
        entry.value
        for record in since.records
        if record.asset_materialization is not None
        and (entry := record.asset_materialization.metadata.get(ROWS_CHANGED)) is not None
    ]
    if since.has_more or len(counts) != len(since.records) or not all(isinstance(c, int) for c in counts):
        return None  # a change not counted: retrain
    changed = sum(cast(list[int], counts))
    share = changed / rows
    if changed and share >= policy.retrain_share:
        return None
    why = (
        f"kept: {changed:,} of its {rows:,} training rows ({share:.2%}) changed since it was trained at "
        f"{trained_at:%Y-%m-%d %H:%M:%S %Z}, under retrain_share {policy.retrain_share:.0%}: the nightly "
        "retrain_job retrains on any change"
    )
    return candidate, why

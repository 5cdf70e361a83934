"""Checks of the training group: no feature from the future, and the model gate."""

from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import psycopg

from sms_assets.defs import check_passes
from sms_assets.defs.features.table import FEATURE_TABLE
from sms_assets.defs.resources import ModelStoreResource, PostgresResource
from sms_assets.defs.shared import LONGEST_CHAIN_FIRST, STORES_POOL
from sms_assets.defs.training import incremental
from sms_assets.defs.training.assets import TRAINING_TABLE, candidate_version, spam_model, training_set
from sms_core.features.comparison import FIRST_IDS
from sms_core.features.schema import FEATURE_NAMES
from sms_core.model import gate
from sms_core.postgres import count_rows

VERIFIED_BUILD = "verified_build"


@dg.asset_check(
    asset=training_set,
    blocking=True,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
    description=(
        "Every training row holds the feature values of the latest feature row at or before its "
        "label's event time: no value from the future reaches the model. A full pass verifies every "
        "row; an incremental one (check_passes) the rows the last build joined again and a seeded "
        "sample of the others."
    ),
)
def no_future_features(
    context: dg.AssetCheckExecutionContext, config: check_passes.SampleConfig, postgres: PostgresResource
) -> dg.AssetCheckResult:
    def same_values(row: str) -> str:
        return " AND ".join(f"t.{c} IS NOT DISTINCT FROM {row}.{c}" for c in FEATURE_NAMES)

    with postgres.connect() as conn:
        scope = verified_rows(context, config, conn)
        # For each training row: does it hold the as-of feature row (the latest at or before its label;
        # all NULL when there is none), and do its values match a feature row stamped after the label?
        # Counted in Postgres, which returns one row however large the training set is.
        query = f"""
            WITH verdict AS (
                SELECT t.message_id,
                       {same_values("asof")} AS as_of,
                       EXISTS (SELECT 1 FROM {FEATURE_TABLE} later
                               WHERE later.message_id = t.message_id
                                 AND later.event_timestamp > t.event_timestamp
                                 AND {same_values("later")}) AS later_row
                FROM {TRAINING_TABLE} t
                LEFT JOIN LATERAL (
                    SELECT * FROM {FEATURE_TABLE} f
                    WHERE f.message_id = t.message_id AND f.event_timestamp <= t.event_timestamp
                    ORDER BY f.event_timestamp DESC LIMIT 1
                ) asof ON true
                {"" if scope.ids is None else "WHERE t.message_id = ANY(%s)"}
            )
            SELECT count(*),
                   count(*) FILTER (WHERE NOT as_of),
                   count(*) FILTER (WHERE NOT as_of AND later_row),
                   (array_agg(message_id ORDER BY message_id) FILTER (WHERE NOT as_of))[:{FIRST_IDS}],
                   (array_agg(message_id ORDER BY message_id)
                        FILTER (WHERE NOT as_of AND later_row))[:{FIRST_IDS}]
            FROM verdict
        """
        params = None if scope.ids is None else [scope.ids.tolist()]
        found = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    checked, not_as_of, from_future, first_not_as_of, first_future = found or (0, 0, 0, None, None)
    return dg.AssetCheckResult(
        passed=checked > 0 and not_as_of == 0,
        metadata={
            "rows_checked": checked,
            "rows_from_future": from_future,
            "first_future_ids": dg.MetadataValue.json(first_future or []),
            "rows_not_as_of_label": not_as_of,
            "first_not_as_of_ids": dg.MetadataValue.json(first_not_as_of or []),
            **scope.metadata(),
        },
    )


@dataclass(frozen=True)
class Verified:
    """The training rows a pass of no_future_features verifies: every one (ids None), or those the
    last build joined again and a seeded sample of the others."""

    ids: np.ndarray | None
    why: str
    build: int
    seed: int
    sample_size: int
    changed: int
    sampled: int

    def metadata(self) -> dict[str, Any]:
        return {
            "pass": f"{'full' if self.ids is None else 'incremental'}: {self.why}",
            VERIFIED_BUILD: self.build,
            "changed_rows_verified": self.changed,
            "sample_size": self.sample_size,
            "sample_seed": self.seed,
            "sampled_rows_verified": self.sampled,
        }


def verified_rows(
    context: dg.AssetCheckExecutionContext, config: check_passes.SampleConfig, conn: psycopg.Connection
) -> Verified:
    """Full when asked, on a small table, after a build that joined every message, or when the build
    before the last was not verified by a passing evaluation; else incremental."""
    seed = check_passes.seed_of(context, config)
    build = incremental.build_of(conn, TRAINING_TABLE)
    changed = incremental.changed_ids(conn, TRAINING_TABLE)
    rows = count_rows(conn, TRAINING_TABLE)
    if config.full:
        why = "asked for (the nightly full_checks_job)"
    elif rows < config.full_below_rows:
        why = f"the table holds fewer than {config.full_below_rows:,} rows"
    elif changed is None:
        why = "the last build joined every labelled message"
    elif len(changed) > rows // 2:  # after new feature code, say: a full pass costs no more
        why = f"the last build joined {len(changed):,} of its {rows:,} rows again"
    elif check_passes.last_passing(context, VERIFIED_BUILD) != build - 1:
        why = f"no passing evaluation of build {build - 1}, the one before the last"
    else:
        sample = incremental.sample_ids(conn, TRAINING_TABLE, seed, config.sample_size)
        why = (
            f"the {len(changed):,} rows build {build} joined again, and {config.sample_size:,} of the others"
        )
        ids = np.concatenate([changed, sample])
        return Verified(ids, why, build, seed, config.sample_size, len(changed), len(sample))
    return Verified(None, why, build, seed, config.sample_size, rows, 0)


@dg.asset_check(
    asset=spam_model,
    blocking=True,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
    description=(
        "The candidate's held-out F1, spam caught, ham blocked and ROC AUC meet the targets and none is "
        "clearly worse than the served model's on the same rows; a failure stops served_model, so the "
        "previous model keeps serving."
    ),
)
def model_beats_floor_and_served(
    context: dg.AssetCheckExecutionContext, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    candidate = candidate_version(context.instance)
    thresholds = gate.DEFAULT_THRESHOLDS
    judgement = gate.judge(model_store.model_store(), candidate, thresholds)
    metadata: dict[str, Any] = {
        "candidate_version": candidate,
        "served_version": judgement.served_version or "",
        "compared_with": judgement.basis,
        "comparison": dg.MetadataValue.md(gate.comparison(judgement.candidate, judgement.served, thresholds)),
        "thresholds": dg.MetadataValue.json(thresholds.as_metadata()),
        "failures": dg.MetadataValue.json(judgement.verdict.failures),
    }
    for name in gate.GATED_METRICS:
        metadata[f"candidate_{name}"] = judgement.candidate[name]
        if judgement.served and name in judgement.served:
            metadata[f"served_{name}"] = judgement.served[name]
    return dg.AssetCheckResult(passed=judgement.verdict.passed, metadata=metadata)

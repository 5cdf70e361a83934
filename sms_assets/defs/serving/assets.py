"""The serving group: the model version the prediction API serves, promoted only through the gate."""

import dagster as dg

from sms_assets.defs.feature_store.assets import online_store
from sms_assets.defs.feature_store.checks import online_matches_offline, request_features_match_batch
from sms_assets.defs.resources import ModelStoreResource
from sms_assets.defs.shared import LONGEST_CHAIN_FIRST, STORES_POOL, latest_verdict
from sms_assets.defs.training.assets import candidate_version, spam_model
from sms_assets.defs.training.checks import no_future_features
from sms_core.model import gate

# The checks whose failure means the data behind a prediction is wrong. Each is blocking, which stops
# served_model in the run where it failed; `serving_data_failures` also keeps a later run from
# promoting a model while the latest verdict on that data is a failure.
SERVING_DATA_CHECKS = [
    key
    for check in (request_features_match_batch, online_matches_offline, no_future_features)
    for key in check.check_keys
]


def serving_data_failures(instance: dg.DagsterInstance) -> list[str]:
    """Why the data behind predictions is not known to be right; empty when every check passed on the
    latest materialization of the asset it checks."""
    failures = []
    for key in SERVING_DATA_CHECKS:
        materialized = instance.get_latest_materialization_event(key.asset_key)
        verdict = latest_verdict(instance, key)
        name = f"{key.name} (on {key.asset_key.to_user_string()})"
        if materialized is None:
            failures.append(f"{key.asset_key.to_user_string()} has never been materialized")
        elif verdict is None or verdict.at < materialized.timestamp:
            failures.append(f"{name} has not run since its asset was last materialized")
        elif not verdict.passed:
            failures.append(f"{name} failed in run {verdict.run_id}")
    return failures


@dg.asset(
    # online_store too: its blocking check must pass before a model is promoted in the same run.
    deps=[spam_model, online_store],
    group_name="serving",
    kinds={"sklearn"},
    description="The model version the prediction service serves: spam_model, once it passed the gate.",
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
)
def served_model(context: dg.AssetExecutionContext, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """spam_model's candidate promoted to CURRENT; running services pick it up without a restart."""
    store = model_store.model_store()
    candidate = candidate_version(context.instance)
    # The served version is read, judged against and replaced under the pointer lock: a rollback by hand
    # waits, and never lands in between.
    with store.moving():
        previous = store.served_version()
        manifest = store.manifest(candidate)
        # The blocking gate check stops this step in the run that trained the candidate; judging again here
        # keeps a failed candidate out when served_model is materialized on its own in a later run.
        verdict = gate.judge(store, candidate).verdict
        withdrawn = store.withdrawn().get(candidate)
        if withdrawn and candidate != previous:
            raise dg.Failure(
                f"model {candidate} was rolled back ({withdrawn}) and is not promoted again; "
                f"`sms-assets model promote {candidate}` serves it on purpose. "
                f"{previous or 'no model'} stays served"
            )
        wrong_data = serving_data_failures(context.instance)
        if wrong_data:
            raise dg.Failure(
                f"model {candidate} is not promoted: the data it would serve is not known to be right "
                f"({'; '.join(wrong_data)}); {previous or 'no model'} stays served"
            )
        if not verdict.passed:
            raise dg.Failure(
                f"model {candidate} failed the model gate ({'; '.join(verdict.failures)}); "
                f"{previous or 'no model'} stays served"
            )
        store.promote(candidate)
    context.log.info(f"serving model {candidate} (was {previous or 'none'})")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(candidate),
        metadata={
            "version": candidate,
            "previous_version": previous or "",
            "changed": candidate != previous,
            "feature_service": manifest.get("feature_service", ""),
            **{
                name: manifest["metrics"].get(name)
                for name in ("f1", "mcc", "roc_auc")
                if name in manifest["metrics"]
            },
            "path": dg.MetadataValue.path(str(store.root / candidate)),
        },
    )

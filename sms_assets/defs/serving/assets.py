"""The serving group: the model version the prediction API serves, promoted only through the gate."""

import dagster as dg

from sms_assets.defs.resources import ModelStoreResource
from sms_assets.defs.training import gate
from sms_assets.defs.training.assets import candidate_version, spam_model


@dg.asset(
    deps=[spam_model],
    group_name="serving",
    kinds={"sklearn"},
    description="The model version the prediction service serves: spam_model, once it passed the gate.",
)
def served_model(context: dg.AssetExecutionContext, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """spam_model's candidate promoted to CURRENT; running services pick it up without a restart."""
    store = model_store.model_store()
    candidate = candidate_version(context.instance)
    previous = store.served_version()
    manifest = store.manifest(candidate)
    # The blocking gate check stops this step in the run that trained the candidate; judging again here
    # keeps a failed candidate out when served_model is materialized on its own in a later run.
    served_metrics = store.manifest(previous)["metrics"] if previous else None
    verdict = gate.evaluate_gate(manifest["metrics"], served_metrics)
    if not verdict.passed:
        raise dg.Failure(
            f"model {candidate} failed the model gate ({'; '.join(verdict.failures)}); "
            f"{previous or 'no model'} stays served"
        )
    store.promote(candidate)
    context.log.info(f"serving model {candidate} (was {previous or 'none'})")
    return dg.MaterializeResult(
        metadata={
            "version": candidate,
            "previous_version": previous or "",
            "changed": candidate != previous,
            "f1": manifest["metrics"]["f1"],
            "roc_auc": manifest["metrics"]["roc_auc"],
            "path": dg.MetadataValue.path(str(store.root / candidate)),
        }
    )

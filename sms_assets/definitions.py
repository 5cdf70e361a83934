"""The one Dagster entry point (`dagster dev`, workspace.yaml, `-m sms_assets.definitions`): every domain's
definitions under `defs/`, merged, with the resources they share.

Each resource setting is a `dg.EnvVar`, shown as such in the launchpad. `sms-assets run` and
`sms-assets dev` set every variable (the defaults, and embedded servers, come from `lib/settings.py`);
to run a `dagster` command directly, first `eval "$(sms-assets services env)"`.
"""

import dagster as dg

# The domain modules, not their Definitions objects: Dagster loads a module with exactly one at its top.
from sms_assets.defs.feature_store import definitions as feature_store
from sms_assets.defs.features import definitions as features
from sms_assets.defs.ingestion import definitions as ingestion
from sms_assets.defs.resources import project_resources
from sms_assets.defs.serving import definitions as serving
from sms_assets.defs.training import definitions as training

AUTOMATION_INTERVAL_S = 10
# Steps at once: the pieces of a large Redis sync run side by side, one per core of this 2-core machine.
MAX_CONCURRENT_STEPS = 2
# Each step is a fork of a server that has imported these once: a fresh interpreter would spend ~10 s
# importing Feast and Dagster per step, longer than most steps take. The definitions import neither
# Feast nor scikit-learn (the run's own process stays light); the steps that use them import them, so
# the server imports them too, once per run.
PRELOADED_MODULES = [
    "sms_assets.definitions",
    "feature_repo.repo",
    "sms_assets.defs.feature_store.online_keys",
    "sms_assets.defs.feature_store.registry",
    "sms_api.prediction",
    "sms_assets.defs.training.fitting",
    "sms_assets.defs.training.metrics",
    "sms_assets.defs.training.model",
]

EXECUTOR_CONFIG = {
    "max_concurrent": MAX_CONCURRENT_STEPS,
    "start_method": {"forkserver": {"preload_modules": PRELOADED_MODULES}},
}
executor = dg.multiprocess_executor.configured(EXECUTOR_CONFIG)

defs = dg.Definitions.merge(
    ingestion.defs,
    features.defs,
    feature_store.defs,
    training.defs,
    serving.defs,
    dg.Definitions(
        sensors=[
            # Evaluates each asset's own automation condition: features and Redis follow new messages.
            dg.AutomationConditionSensorDefinition(
                "sms_automation",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=AUTOMATION_INTERVAL_S,
                description="Evaluates the assets' automation conditions: features and Redis follow "
                "new messages.",
            )
        ],
        executor=executor,
        resources=project_resources(),
    ),
)

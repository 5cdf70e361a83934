"""The one Dagster entry point (`dagster dev`, workspace.yaml, `-m sms_assets.definitions`): every domain's
definitions under `defs/`, merged, with the resources they share.

Each resource setting is a `dg.EnvVar`, shown as such in the launchpad. `sms-assets run` and
`sms-assets dev` set every variable (the defaults, and embedded servers, come from `sms_core/settings.py`);
to run a `dagster` command directly, first `eval "$(sms-assets services env)"`.
"""

import dagster as dg

from sms_assets.defs.executor import executor_from_settings

# The domain modules, not their Definitions objects: Dagster loads a module with exactly one at its top.
from sms_assets.defs.feature_store import definitions as feature_store
from sms_assets.defs.features import definitions as features
from sms_assets.defs.ingestion import definitions as ingestion
from sms_assets.defs.resources import project_resources
from sms_assets.defs.serving import definitions as serving
from sms_assets.defs.training import definitions as training

AUTOMATION_INTERVAL_S = 10

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
        # SMS_EXECUTOR: multiprocess (the default: two steps at once, forked from a server that
        # imported what they use), k8s or in_process; defs/executor.py.
        executor=executor_from_settings(),
        resources=project_resources(),
    ),
)

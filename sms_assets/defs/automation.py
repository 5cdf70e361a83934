"""Declarative automation across the groups: each asset's own automation condition, evaluated by one
sensor (features and Redis follow new messages; the registry follows the feature repo)."""

import dagster as dg

AUTOMATION_INTERVAL_S = 10

sms_automation = dg.AutomationConditionSensorDefinition(
    "sms_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Evaluates the assets' automation conditions: features and Redis follow new messages.",
)

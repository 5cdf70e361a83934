"""The code location's executor: where a run's steps execute, chosen by SMS_EXECUTOR (sms_core/settings.py).

- `multiprocess`: each step in a process of its own beside the run worker, so the pieces of a backfill
  run side by side on one machine.
- `k8s`: each step in a Kubernetes Job of its own (dagster-k8s, the project's `k8s` extra); the image,
  namespace, Secret, volumes and pod resources come from the instance's K8sRunLauncher and the run
  config (deploy/k8s/).
- `in_process`: every step in the run worker itself.

Both parallel executors keep their own config schema, so a run config may still set any field; the steps
of one run at once default to SMS_MAX_CONCURRENT rather than to the executor's unbounded default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from sms_core import settings

# A multiprocess step is a fork of a server that has imported these once per run: a fresh interpreter
# would spend seconds importing Feast, scikit-learn and Dagster per step, longer than most steps take.
# The definitions import neither Feast nor scikit-learn (a run's own process stays light), so the modules
# of the steps that use them are named here.
PRELOADED_MODULES = [
    "sms_assets.definitions",
    "feature_repo.repo",
    "sms_core.online_keys",
    "sms_core.registry",
    "sms_core.prediction",
    "sms_core.model.fitting",
    "sms_core.model.metrics",
    "sms_core.model.pipelines",
]
FORKSERVER = {"forkserver": {"preload_modules": PRELOADED_MODULES}}


def executor_from_settings(chosen: settings.Settings) -> dg.ExecutorDefinition:
    """The executor SMS_EXECUTOR names, bounded by SMS_MAX_CONCURRENT."""
    kind, limit = chosen.executor, chosen.max_concurrent
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "k8s":
        try:
            # Only here: the Kubernetes client is an optional extra that local runs do without.
            from dagster_k8s import k8s_job_executor
        except ImportError as missing:
            raise settings.BadSetting(
                f"{settings.EXECUTOR_ENV}=k8s needs dagster-k8s, the project's k8s extra: "
                f"pip install 'sms-assets[k8s]' ({missing})"
            ) from missing
        return with_defaults(k8s_job_executor, {"max_concurrent": limit})
    return with_defaults(dg.multiprocess_executor, {"max_concurrent": limit, "start_method": FORKSERVER})


def with_defaults(executor: dg.ExecutorDefinition, defaults: dict[str, Any]) -> dg.ExecutorDefinition:
    """`executor` under its own name and schema, with `defaults` for the fields a run's config leaves
    out (the steps at once, how a step's process starts)."""

    def completed(config: dict[str, Any]) -> dict[str, Any]:
        return {**config, **{k: v for k, v in defaults.items() if config.get(k) is None}}

    schema = executor.config_schema
    assert schema is not None, executor.name
    return executor.configured(completed, config_schema=schema.as_field())

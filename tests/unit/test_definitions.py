"""The code location: it loads from its folder without settings, every asset sits in the group of its
folder with its kinds and a description, every check judges its asset, every job selects what it
should, every resource field takes its setting where it is used, and Dagster's `dg` reads it all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.definition_config_schema import ConfiguredDefinitionConfigSchema

from sms_assets.definitions import defs
from sms_assets.defs.executor import PRELOADED_MODULES
from sms_core import settings
from tests.conftest import PROJECT_ROOT

DEFS_FOLDER = PROJECT_ROOT / "sms_assets" / "defs"
GROUPS = ("ingestion", "features", "feature_store", "training", "serving")
# Each asset: its group (the folder under sms_assets/defs/ that defines it) and its kinds.
EXPECTED = {
    "raw_sms_messages": ("ingestion", {"postgres"}),
    "sms_arrivals": ("ingestion", {"postgres"}),
    "sms_arrival_labels": ("ingestion", {"postgres"}),
    "sms_features": ("features", {"postgres", "pandas"}),
    "feast_registry": ("feature_store", {"feast", "postgres"}),
    "online_store": ("feature_store", {"feast", "redis"}),
    "training_set": ("training", {"feast", "postgres"}),
    "spam_model": ("training", {"sklearn"}),
    "served_model": ("serving", {"sklearn"}),
    "served_log": ("serving", {"postgres", "feast"}),
    "served_feature_metrics": ("serving", {"feast", "postgres"}),
}
# Each check, the asset it judges, and whether a failure stops the steps downstream of that asset.
CHECKS = {
    "online_matches_offline": ("online_store", True),
    "request_features_match_batch": ("feast_registry", True),
    "no_future_features": ("training_set", True),
    "model_beats_floor_and_served": ("spam_model", True),
    "served_predictions_match_offline": ("served_model", False),
    # A served answer that differs from the offline store proves serving wrong; drift and live quality
    # describe the traffic and the model, and stop nothing.
    "served_features_match_offline": ("served_log", True),
    "served_traffic_like_training": ("served_log", False),
    "served_quality_holds": ("served_log", False),
}
# Each job: the assets it materializes and the checks that run with them.
JOBS = {
    "__ASSET_JOB": (set(EXPECTED), set(CHECKS)),
    # An arrival is carried to Redis in its own run: ingested, its features computed, written to Redis.
    "arrivals_job": (
        {"sms_arrivals", "sms_arrival_labels", "sms_features", "online_store"},
        {"online_matches_offline"},
    ),
    "retrain_job": (
        {"training_set", "spam_model", "served_model"},
        {"no_future_features", "model_beats_floor_and_served", "served_predictions_match_offline"},
    ),
    "reconcile_online_store_job": ({"online_store"}, {"online_matches_offline"}),
    # The nightly full pass: checks alone, no asset materialized.
    "full_checks_job": (
        set(),
        {
            "online_matches_offline",
            "request_features_match_batch",
            "served_predictions_match_offline",
            "no_future_features",
        },
    ),
    "served_log_job": (
        {"served_log", "served_feature_metrics"},
        {"served_features_match_offline", "served_traffic_like_training", "served_quality_holds"},
    ),
}


def _defined_in(group: str, nodes: set[str]) -> set[str]:
    """Which of the node names (the functions behind assets and checks) a module of one folder under
    sms_assets/defs/ defines (with `def`, or as the result of a factory)."""
    source = "\n".join(path.read_text() for path in (DEFS_FOLDER / group).glob("*.py"))
    return {name for name in nodes if re.search(rf"^(def {name}\(|{name} = )", source, re.M)}


def assets_defined_in(group: str) -> set[str]:
    """The assets whose function a module of the folder defines (a multi-asset's keys all count)."""
    found = set()
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition), asset
        if _defined_in(group, {asset.node_def.name}):
            found |= {key.to_user_string() for key in asset.keys}
    return found


def checks_defined_in(group: str) -> set[str]:
    return _defined_in(group, set(CHECKS))


def test_the_folders_under_defs_are_the_groups() -> None:
    folders = {path.name for path in DEFS_FOLDER.iterdir() if (path / "assets.py").is_file()}
    groups = {node.group_name for node in defs.resolve_asset_graph().asset_nodes}
    assert folders == groups == set(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_every_asset_is_in_the_group_of_the_folder_that_defines_it(group: str) -> None:
    graph = defs.resolve_asset_graph()
    defined_here = assets_defined_in(group)
    assert defined_here == {name for name, (expected, _) in EXPECTED.items() if expected == group}
    for name in defined_here:
        assert graph.get(dg.AssetKey(name)).group_name == group, name


def test_every_asset_has_its_kinds_and_a_description() -> None:
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(EXPECTED)
    for name, (_, kinds) in EXPECTED.items():
        node = graph.get(dg.AssetKey(name))
        assert set(node.kinds) == kinds, name
        assert node.description and node.description.strip(), name


def test_lineage() -> None:
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_sms_messages") == set()
    assert parents("sms_arrivals") == set()
    assert parents("sms_arrival_labels") == set()
    assert parents("sms_features") == {"raw_sms_messages", "sms_arrivals"}
    assert parents("feast_registry") == {"sms_features"}
    assert parents("training_set") == {
        "feast_registry",
        "raw_sms_messages",
        "sms_arrivals",
        "sms_arrival_labels",
    }
    assert parents("spam_model") == {"training_set"}
    assert parents("online_store") == {"feast_registry", "sms_features"}
    # online_store too, so that its blocking check stops a promotion in the same run.
    assert parents("served_model") == {"spam_model", "online_store"}
    # The registry names each service's log table; the API writes the served model's answers there.
    assert parents("served_log") == {"feast_registry", "served_model"}
    assert parents("served_feature_metrics") == {"served_log"}


def test_checks_judge_their_assets_and_say_what_they_check() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.name: key for key in graph.asset_check_keys}
    assert set(keys) == set(CHECKS)
    for name, (asset, blocking) in CHECKS.items():
        assert keys[name].asset_key == dg.AssetKey(asset), name
        spec = graph.get_check_spec(keys[name])
        assert spec.blocking is blocking, name
        assert spec.description and spec.description.strip(), name


def test_each_check_is_defined_beside_the_asset_it_judges() -> None:
    defined = {group: checks_defined_in(group) for group in GROUPS}
    assert set().union(*defined.values()) == set(CHECKS)
    for group, checks in defined.items():
        assert {CHECKS[name][0] for name in checks} <= assets_defined_in(group), group


def test_every_job_resolves_and_selects_its_assets_and_their_checks() -> None:
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert set(jobs) == set(JOBS)
    for name, (assets, checks) in JOBS.items():
        layer = jobs[name].asset_layer
        assert {key.to_user_string() for key in layer.selected_asset_keys} == assets, name
        assert {key.name for key in layer.asset_graph.asset_check_keys} == checks, name
    # One op per check, and one per asset except ingest_arrivals, which materializes both arrival tables.
    assert len(jobs["__ASSET_JOB"].nodes) == len(EXPECTED) - 1 + len(CHECKS)


def test_definitions_validate() -> None:
    dg.Definitions.validate_loadable(defs)


def test_every_resource_field_is_left_to_its_setting_and_names_it() -> None:
    """The definitions set no value: each field takes its SMS_* setting where the resource is used."""
    for key, resource in (defs.resources or {}).items():
        for name, field in type(resource).model_fields.items():
            value = getattr(resource, name)
            if isinstance(value, dg.ConfigurableResource) or field.default is not None:
                continue  # a nested resource, or a fixed default (the download URL, the batch limit)
            assert value is None, f"{key}.{name}"
            assert field.description and "SMS_" in field.description, f"{key}.{name}"


def test_a_resource_reads_its_setting_in_the_process_that_uses_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resources = defs.resources or {}
    monkeypatch.setenv(settings.PROJECT_ENV, "from_the_environment")
    monkeypatch.setenv(settings.STATE_ENV, str(tmp_path))
    monkeypatch.setenv(settings.HOLDBACK_ENV, "7")
    assert resources["feast"].project_name() == "from_the_environment"
    assert resources["model_store"].model_store().root == tmp_path / "models"
    assert resources["landing"].folder().root == tmp_path / "landing"
    assert resources["dataset"].held_back() == 7
    monkeypatch.setenv(settings.HOLDBACK_ENV, "-1")
    with pytest.raises(
        settings.BadSetting, match=r"^SMS_DATASET_HOLDBACK='-1': .*greater than or equal to 0"
    ):
        resources["dataset"].held_back()


def test_dg_checks_and_lists_the_definitions_with_no_setting() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SMS_", "DAGSTER_"))}
    dg_bin = str(Path(sys.executable).with_name("dg"))
    checked = subprocess.run(
        [dg_bin, "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully." in checked.stdout
    listed = subprocess.run(
        [dg_bin, "list", "defs", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)
    assert {asset["asset_key"] for asset in found["assets"]} == set(EXPECTED)
    assert {check["name"] for check in found["asset_checks"]} == set(CHECKS)
    assert {job["name"] for job in found["jobs"]} == set(JOBS) - {"__ASSET_JOB"}
    assert {resource["name"] for resource in found["resources"]} == {
        "postgres", "feast", "dataset", "model_store", "landing"
    }  # fmt: skip


def test_the_definitions_load_without_any_sms_variable_set() -> None:
    probe = (
        "import json, os, dagster as dg; from sms_assets.definitions import defs; "
        "dg.Definitions.validate_loadable(defs); "
        "keys = defs.resolve_asset_graph().get_all_asset_keys(); "
        "print(json.dumps([sorted(k.to_user_string() for k in keys), "
        "sorted(n for n in os.environ if n.startswith('SMS_'))]))"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("SMS_")}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assets, variables = json.loads(result.stdout.strip().splitlines()[-1])
    assert (assets, variables) == (sorted(EXPECTED), [])


def test_the_definitions_load_without_feast_or_scikit_learn() -> None:
    """Every run's process loads the definitions first: Feast (seconds of typeguard instrumentation)
    and scikit-learn are imported by the steps that use them, not by every run."""
    probe = (
        "import sys, sms_assets.definitions; "
        "print(sorted(m for m in ('feast', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_steps_run_two_at_once_forked_from_a_server_that_imported_what_they_use() -> None:
    executor = defs.executor
    assert isinstance(executor, dg.ExecutorDefinition) and executor.name == "multiprocess"
    schema = executor.config_schema
    assert isinstance(schema, ConfiguredDefinitionConfigSchema)
    # What a run gets when its config says nothing about execution; a run's own config still wins.
    resolved = schema.resolve_config({})
    assert resolved.success and resolved.value is not None
    config = resolved.value["config"]
    assert config["max_concurrent"] == 2
    preload = config["start_method"]["forkserver"]["preload_modules"]
    assert preload == PRELOADED_MODULES and preload[0] == "sms_assets.definitions"
    own = schema.resolve_config({"config": {"max_concurrent": 1}})
    assert own.success and own.value is not None and own.value["config"]["max_concurrent"] == 1
    # What the steps import for themselves: Feast and scikit-learn are among the modules preloaded.
    probe = (
        f"import importlib, sys; [importlib.import_module(m) for m in {preload!r}]; "
        "print(sorted(m for m in ('feast', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['feast', 'sklearn']"

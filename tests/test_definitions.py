"""The code location loads, every asset is there with its group and kinds, and every job resolves."""

import dagster as dg

from sms_assets.definitions import defs

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
}
# Each check, the asset it judges, and whether a failure stops the steps downstream of that asset.
CHECKS = {
    "online_matches_offline": ("online_store", False),
    "request_features_match_batch": ("feast_registry", False),
    "no_future_features": ("training_set", True),
    "model_beats_floor_and_served": ("spam_model", True),
    "served_predictions_match_offline": ("served_model", False),
}


def test_assets_groups_and_kinds() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(EXPECTED)
    for name, (group, kinds) in EXPECTED.items():
        spec = graph.get(dg.AssetKey(name))
        assert spec.group_name == group, name
        assert set(spec.kinds) == kinds, name
        assert spec.description, name


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
    assert parents("online_store") == {"feast_registry"}
    assert parents("served_model") == {"spam_model"}


def test_checks_judge_their_assets() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.name: key for key in graph.asset_check_keys}
    assert set(keys) == set(CHECKS)
    for name, (asset, blocking) in CHECKS.items():
        assert keys[name].asset_key == dg.AssetKey(asset), name
        spec = graph.get_check_spec(keys[name])
        assert spec.blocking is blocking, name
        assert spec.description, name


def test_every_job_resolves() -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    # One op per check, and one per asset except ingest_arrivals, which materializes both arrival tables.
    assert len(job.nodes) == len(EXPECTED) - 1 + len(CHECKS)
    for job_def in defs.resolve_all_job_defs():
        assert job_def.name


def test_definitions_validate() -> None:
    dg.Definitions.validate_loadable(defs)

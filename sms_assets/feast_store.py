"""The Feast feature store, configured from the service URLs, and the repo definitions to apply."""

from __future__ import annotations

import copy
from pathlib import Path
from string import Template
from typing import Any

import yaml
from feast import FeatureStore, Project, RepoConfig
from feast.diff.property_diff import TransitionType
from feast.diff.registry_diff import FeastObjectDiff
from feast.feature_view import DUMMY_ENTITY, DUMMY_ENTITY_NAME
from feast.repo_contents import RepoContents
from feast.repo_operations import apply_total_with_repo_instance
from google.protobuf.message import Message

from feature_repo import repo
from sms_assets.services import PostgresParts, RedisParts, sqlalchemy_url

REPO_PATH = Path(repo.__file__).resolve().parent
FEATURE_STORE_YAML = REPO_PATH / "feature_store.yaml"
FEATURE_SERVICE = "sms_service"
TEXT_FEATURE_SERVICE = "sms_text_service"
FEATURE_VIEW = "sms_base_features"
TEXT_FEATURE_VIEW = "sms_text_features"


def feast_env(postgres_url: str, redis_url: str, project: str) -> dict[str, str]:
    """The variables `feature_store.yaml` names, derived from the two service URLs."""
    pg = PostgresParts.from_url(postgres_url)
    return {
        "SMS_FEAST_PROJECT": project,
        "SMS_FEAST_REGISTRY_URL": sqlalchemy_url(postgres_url).render_as_string(hide_password=False),
        "SMS_FEAST_PG_HOST": pg.host,
        "SMS_FEAST_PG_PORT": str(pg.port),
        "SMS_FEAST_PG_DATABASE": pg.database,
        "SMS_FEAST_PG_USER": pg.user,
        "SMS_FEAST_PG_PASSWORD": pg.password,
        "SMS_FEAST_PG_SSLMODE": pg.sslmode,
        "SMS_FEAST_REDIS": RedisParts.from_url(redis_url).feast_connection_string(),
    }


def repo_config(postgres_url: str, redis_url: str, project: str) -> RepoConfig:
    """`feature_store.yaml` with its variables filled in from the service URLs."""
    values = feast_env(postgres_url, redis_url, project)
    raw = yaml.safe_load(FEATURE_STORE_YAML.read_text())
    # Substitute after parsing, so a password holding YAML syntax stays a plain string.
    config = RepoConfig(**_substitute(raw, values))
    config.repo_path = REPO_PATH
    return config


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, values) for value in node]
    if isinstance(node, str):
        return Template(node).substitute(values)
    return node


def feature_store(postgres_url: str, redis_url: str, project: str) -> FeatureStore:
    return FeatureStore(config=repo_config(postgres_url, redis_url, project))


def serving_store(
    postgres_url: str, redis_url: str, project: str, registry_refresh_s: int = 60
) -> FeatureStore:
    """A store for a long-running server: its registry is re-read by a background thread.

    With the default (sync) cache a request that finds the cache expired re-reads the registry from
    Postgres itself; in thread mode no request ever waits for the registry, and while Postgres is down
    the last registry read keeps serving.
    """
    config = repo_config(postgres_url, redis_url, project)
    registry = config.registry
    assert registry is not None  # feature_store.yaml declares one
    registry.cache_mode = "thread"
    registry.cache_ttl_seconds = registry_refresh_s
    return FeatureStore(config=config)


def repo_contents(project: str) -> RepoContents:
    """Fresh copies of the objects `feature_repo/repo.py` collects, as `feast apply` would register them.

    Applying fills in inferred fields in place (an on-demand view gains a dummy entity column, a data
    source the registry's timestamps), and an object changed by one apply makes the next apply in the
    same process fail or report a change. Each object is copied on its own so that stamping the data
    source does not also stamp the feature view's copy of it, which the registry compares.
    """

    def fresh(objects: list[Any]) -> list[Any]:
        return [copy.deepcopy(obj) for obj in objects]

    return RepoContents(
        projects=[Project(name=project)],
        data_sources=fresh(repo.DATA_SOURCES),
        # `feast apply` always declares Feast's placeholder entity of entity-less views (the on-demand
        # view has none); left out, an apply that changes anything else would delete it.
        entities=fresh([*repo.ENTITIES, DUMMY_ENTITY]),
        feature_views=fresh(repo.FEATURE_VIEWS),
        on_demand_feature_views=fresh(repo.ON_DEMAND_FEATURE_VIEWS),
        stream_feature_views=[],
        label_views=[],
        feature_services=fresh(repo.FEATURE_SERVICES),
        permissions=[],
    )


def apply_repo(store: FeatureStore) -> dict[str, list[str]]:
    """Apply `feature_repo/` to the registry, as `feast apply` does; returns what changed by kind.

    Idempotent: when the registry already matches, nothing is written.
    """
    contents = repo_contents(store.project)
    registry_diff, _, _ = store.plan(contents)
    changes: dict[str, list[str]] = {t.name.lower(): [] for t in TransitionType}
    for diff in registry_diff.feast_object_diffs:
        if diff.name == DUMMY_ENTITY_NAME:
            continue  # Feast's internal entity for entity-less views; `feast plan` hides it too
        label = f"{diff.feast_object_type.value} {diff.name}"
        transition = diff.transition_type
        if transition == TransitionType.UPDATE and _only_bookkeeping(diff):
            transition = TransitionType.UNCHANGED
        changes[transition.name.lower()].append(label)
    if any(changes[kind] for kind in ("create", "update", "delete")):
        # The code path of `feast apply` itself, so the CLI and this asset leave identical registries.
        apply_total_with_repo_instance(
            store, store.project, store.registry, contents, skip_source_validation=False
        )
    return {kind: names for kind, names in changes.items() if names}


def _only_bookkeeping(diff: FeastObjectDiff) -> bool:
    """True when an update touches nothing but the `meta` timestamps of nested protos.

    After a materialization Feast's plan reports the feature view as updated because the stored
    copy of its batch source carries other created/updated timestamps; the definition is the same.
    """
    if not diff.feast_object_property_diffs:
        return False
    for prop in diff.feast_object_property_diffs:
        existing, declared = prop.val_existing, prop.val_declared
        if not (isinstance(existing, Message) and isinstance(declared, Message)):
            return False
        if _without_meta(existing) != _without_meta(declared):
            return False
    return True


def _without_meta(proto: Message) -> Message:
    copy = type(proto)()
    copy.CopyFrom(proto)
    if "meta" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("meta")
    return copy

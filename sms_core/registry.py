"""A Feast repo (`feature_repo/repo.py`, passed in) applied to Feast's registry, as `feast apply` does it,
and only when it changed."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

from feast import FeatureStore, Project
from feast.diff.property_diff import TransitionType
from feast.diff.registry_diff import FeastObjectDiff
from feast.feature_view import DUMMY_ENTITY, DUMMY_ENTITY_NAME
from feast.repo_contents import RepoContents
from feast.repo_operations import apply_total_with_repo_instance
from google.protobuf.message import Message

from sms_core.contracts import TEXT_TWINS
from sms_core.model.store import ModelStore


def repo_contents(project: str, repo: ModuleType) -> RepoContents:
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


def apply_repo(store: FeatureStore, repo: ModuleType) -> dict[str, list[str]]:
    """Apply `feature_repo/` to the registry, as `feast apply` does; returns what changed by kind.

    Idempotent: when the registry already matches, nothing is written.
    """
    contents = repo_contents(store.project, repo)
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
        # Later steps of the same run read through this store: without a refresh they would see the
        # registry as it was before, for up to its cache's time-to-live.
        store.refresh_registry()
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


def services_named_by(models: ModelStore) -> dict[str, list[str]]:
    """The feature services (each by id and by text) the kept model versions are served through."""
    named: dict[str, list[str]] = {}
    for version, manifest in models.versions().items():
        service = manifest.get("feature_service")
        for name in (service, TEXT_TWINS.get(service or "")):
            if name:
                named.setdefault(name, []).append(version)
    return named

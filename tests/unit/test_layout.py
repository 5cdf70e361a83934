"""The layout's promises: the API stands apart from the code location, each feature is named once.

The import layers themselves are pyproject.toml's [tool.importlinter] contracts, which `make test` checks
with `lint-imports`; this checks what a process actually loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sms_core.features.schema import FEATURE_NAMES
from tests.conftest import PROJECT_ROOT

PACKAGES = ("sms_core", "sms_assets", "sms_api", "feature_repo")
# Where a feature's name may appear: its declaration and the function that computes it.
FEATURE_HOMES = {
    PROJECT_ROOT / "sms_core" / "features" / "schema.py",
    PROJECT_ROOT / "sms_core" / "features" / "compute.py",
}
MAX_MODULE_LINES = 260


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (PROJECT_ROOT / package).rglob("*.py"))


def test_the_api_loads_neither_dagster_nor_the_code_location() -> None:
    probe = (
        "import json, sys, sms_api.app; watched = ('dagster', 'sms_assets'); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in watched)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_a_feature_is_named_only_where_it_is_declared_and_computed(name: str) -> None:
    named_in = {path for path in _sources() if name in path.read_text(encoding="utf-8")}
    assert named_in == FEATURE_HOMES


def test_no_module_is_longer_than_one_sitting() -> None:
    long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path in _sources()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_folder_tree_tells_the_groups_story() -> None:
    from sms_assets.definitions import defs

    groups = {node.group_name for node in defs.resolve_asset_graph().asset_nodes}
    folders = {
        path.name
        for path in (PROJECT_ROOT / "sms_assets" / "defs").iterdir()
        if (path / "assets.py").is_file()
    }
    assert groups == folders == {"ingestion", "features", "feature_store", "training", "serving"}

"""A feature added in code reaches the registry, Postgres, Redis and the training set in one run.

The change is made the way a user makes it, in the schema declaration and the function only, in a copy
of the project; `sms-assets run` on that copy then runs against the same stores as the original did. A
new number joins sms_service (the text statistics), which a model trained on that service learns from;
the served model, trained on sms_service_v2 (the text), keeps serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sms_assets.defs.feature_store.assets import feature_names
from sms_core import feast_config
from sms_core.postgres import connect, query_frame
from tests.conftest import PROJECT_ROOT, new_slice

pytestmark = pytest.mark.e2e

PACKAGES = ("sms_core", "sms_assets", "sms_api", "feature_repo")
SMS_ASSETS = PROJECT_ROOT / ".venv" / "bin" / "sms-assets"
NEW_FEATURE = "question_count"


def _copy_with_a_seventh_feature(target: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    # dg finds the project (and its code location) by the pyproject.toml above where it runs.
    shutil.copy(PROJECT_ROOT / "pyproject.toml", target / "pyproject.toml")
    schema = target / "sms_core" / "features" / "schema.py"
    compute = target / "sms_core" / "features" / "compute.py"
    declared = schema.read_text().replace(
        '    "uppercase_ratio": RATIO,\n',
        f'    "uppercase_ratio": RATIO,\n    "{NEW_FEATURE}": INTEGER,\n',
    )
    computed = compute.read_text().replace(
        '        "uppercase_ratio": upper / letters if letters else 0.0,\n',
        '        "uppercase_ratio": upper / letters if letters else 0.0,\n'
        f'        "{NEW_FEATURE}": text.count("?"),\n',
    )
    assert NEW_FEATURE in declared and NEW_FEATURE in computed, "the schema or compute.py changed shape"
    schema.write_text(declared)
    compute.write_text(computed)


def _run(code: Path, env: dict[str, str], message_id: int) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SMS_ASSETS), "run", "--message-id", str(message_id)],
        env={**env, "PYTHONPATH": str(code)},
        cwd=code,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _one(conn: psycopg.Connection, query: str) -> Any:
    return query_frame(conn, query).iloc[0, 0]


def test_a_seventh_feature_reaches_postgres_redis_and_the_model_in_one_run(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    copy = tmp_path / "project"
    _copy_with_a_seventh_feature(copy)
    with new_slice(server_urls, tmp_path / "state") as slice_:
        env = {**os.environ, **slice_.env(), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
        (tmp_path / "dagster_home").mkdir()
        before = _run(PROJECT_ROOT, env, message_id=1)
        assert NEW_FEATURE not in before.stdout
        with connect(slice_.postgres_url) as conn:
            asking = int(_one(conn, "SELECT min(message_id) FROM raw_sms_messages WHERE text LIKE '%?%?%'"))
            text = _one(conn, f"SELECT text FROM raw_sms_messages WHERE message_id = {asking}")
        questions = text.count("?")

        after = _run(copy, env, message_id=asking)

        # Redis serves the new feature, read through the statistics' feature service.
        store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
        assert feature_names(store.get_feature_service("sms_service"))[-1] == NEW_FEATURE
        online = store.get_online_features(
            features=store.get_feature_service("sms_service"), entity_rows=[{"message_id": asking}]
        ).to_dict()
        assert online[NEW_FEATURE] == [questions]
        with connect(slice_.postgres_url) as conn:
            assert (
                _one(conn, f"SELECT {NEW_FEATURE} FROM sms_features WHERE message_id = {asking}") == questions
            )
            assert _one(conn, f"SELECT count(*) FROM sms_features WHERE {NEW_FEATURE} IS NULL") == 0
            assert _one(conn, f"SELECT count({NEW_FEATURE}) FROM sms_training_set") > 5000
        # The run ended in a prediction by the served model, on the text.
        assert f"message {asking}:" in after.stdout and "via sms_service_v2" in after.stdout

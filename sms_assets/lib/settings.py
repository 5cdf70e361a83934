"""The project's settings: environment variables, their documented defaults, chosen in one place.

The Dagster resources read each setting through `dg.EnvVar` (so the launchpad shows where a value
comes from), the prediction API through `ApiSettings.from_environment`. Both run in processes started
by `sms-assets`, which calls `resolve()` once: every unset variable gets its default here, and an
unset service URL starts an embedded server (`embedded.py`).

| variable | default |
|---|---|
| SMS_POSTGRES_URL | an embedded Postgres under the state folder |
| SMS_REDIS_URL | an embedded Redis under the state folder |
| SMS_FEAST_PROJECT | sms_assets |
| SMS_STATE_DIR | .sms_state beside the project |
| SMS_MODEL_DIR | <state>/models |
| SMS_LANDING_DIR | <state>/landing |
| SMS_DATASET_PATH | empty: download the UCI zip into <state>/downloads |
| SMS_DATASET_HOLDBACK | 0 |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ENV = "SMS_POSTGRES_URL"
REDIS_ENV = "SMS_REDIS_URL"
PROJECT_ENV = "SMS_FEAST_PROJECT"
STATE_ENV = "SMS_STATE_DIR"
MODEL_DIR_ENV = "SMS_MODEL_DIR"
LANDING_ENV = "SMS_LANDING_DIR"
DATASET_ENV = "SMS_DATASET_PATH"
HOLDBACK_ENV = "SMS_DATASET_HOLDBACK"
NAMES = (
    POSTGRES_ENV,
    REDIS_ENV,
    PROJECT_ENV,
    STATE_ENV,
    MODEL_DIR_ENV,
    LANDING_ENV,
    DATASET_ENV,
    HOLDBACK_ENV,
)
DEFAULT_FEAST_PROJECT = "sms_assets"


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder for local state (embedded servers, models, landing folder, downloads)."""
    path = Path(environ.get(STATE_ENV) or PROJECT_ROOT / ".sms_state").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every setting, from `environ` where set, else its default; starts embedded servers as needed."""
    from sms_assets.lib import embedded

    state = state_dir(environ)
    return {
        POSTGRES_ENV: environ.get(POSTGRES_ENV) or embedded.postgres_url(state),
        REDIS_ENV: environ.get(REDIS_ENV) or embedded.redis_url(state),
        PROJECT_ENV: environ.get(PROJECT_ENV) or DEFAULT_FEAST_PROJECT,
        STATE_ENV: str(state),
        MODEL_DIR_ENV: environ.get(MODEL_DIR_ENV) or str(state / "models"),
        LANDING_ENV: environ.get(LANDING_ENV) or str(state / "landing"),
        DATASET_ENV: environ.get(DATASET_ENV) or "",
        HOLDBACK_ENV: environ.get(HOLDBACK_ENV) or "0",
    }

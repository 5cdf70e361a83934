"""The project's settings: environment variables, their documented defaults, chosen in one place.

The Dagster resources read each setting through `dg.EnvVar` (so the launchpad shows where a value
comes from), the prediction API through `ServiceConfig.from_environment`. Both run in processes started
by `sms-assets`, which calls `resolve()` once: every unset variable gets its default here, and an
unset service URL starts an embedded server (`embedded.py`).

| variable | default |
|---|---|
| SMS_POSTGRES_URL | an embedded Postgres under the state folder |
| SMS_REDIS_URL | an embedded Redis under the state folder (redis+cluster://: a Redis Cluster's seed nodes) |
| SMS_FEAST_PROJECT | sms_assets |
| SMS_STATE_DIR | .sms_state beside the project |
| SMS_MODEL_DIR | <state>/models |
| SMS_LANDING_DIR | <state>/landing |
| SMS_DATASET_PATH | empty: download the UCI zip into <state>/downloads |
| SMS_DATASET_HOLDBACK | 0 |

The prediction API's own, read by the API only (not part of `resolve()`, so that
`sms-assets services` never prints the token):

| variable | default |
|---|---|
| SMS_API_WORKERS | 1 server process |
| SMS_API_TOKEN | unset: /predict needs no token |
| SMS_API_DEADLINE_S | 3 seconds: how long a request may wait for Redis or Postgres before it is a 504 |

The code location's executor, read when the definitions load (`defs/executor.py`), so every process
that loads them (code server, run worker, step worker) must be given the same values:

| variable | default |
|---|---|
| SMS_EXECUTOR | multiprocess: a run's steps in processes beside it; k8s: a Kubernetes Job each; in_process |
| SMS_MAX_CONCURRENT | 2 steps of a run at once (multiprocess processes, or k8s pods) |
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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
API_WORKERS_ENV = "SMS_API_WORKERS"
API_TOKEN_ENV = "SMS_API_TOKEN"
DEFAULT_API_WORKERS = 1
MAX_API_WORKERS = 32
MIN_API_TOKEN_CHARS = 16
API_DEADLINE_ENV = "SMS_API_DEADLINE_S"
DEFAULT_API_DEADLINE_S = 3.0
EXECUTOR_ENV = "SMS_EXECUTOR"
EXECUTORS = ("multiprocess", "k8s", "in_process")
MAX_CONCURRENT_ENV = "SMS_MAX_CONCURRENT"
DEFAULT_MAX_CONCURRENT = 2
MAX_MAX_CONCURRENT = 64
# RFC 6750's b64token: what a client sends after "Bearer " byte for byte, with no quoting.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class BadSetting(ValueError):
    """A setting whose value cannot be used. The message names the variable, never a secret's value."""


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder for local state (embedded servers, models, landing folder, downloads)."""
    path = Path(environ.get(STATE_ENV) or PROJECT_ROOT / ".sms_state").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every setting, from `environ` where set, else its default; starts embedded servers as needed."""
    from sms_core import embedded

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


def _count(environ: Mapping[str, str], name: str, default: int, maximum: int, what: str) -> int:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum):
        raise BadSetting(f"{name}={raw[:20]!r}: give a whole number of {what} from 1 to {maximum}")
    return int(raw)


def api_workers(environ: Mapping[str, str] = os.environ) -> int:
    """How many server processes `sms-assets serve` runs (SMS_API_WORKERS)."""
    return _count(environ, API_WORKERS_ENV, DEFAULT_API_WORKERS, MAX_API_WORKERS, "server processes")


def executor(environ: Mapping[str, str] = os.environ) -> str:
    """Where a run's steps execute (SMS_EXECUTOR): one of EXECUTORS."""
    raw = (environ.get(EXECUTOR_ENV) or "").strip()
    if not raw:
        return EXECUTORS[0]
    if raw not in EXECUTORS:
        raise BadSetting(f"{EXECUTOR_ENV}={raw[:20]!r}: give one of {', '.join(EXECUTORS)}")
    return raw


def max_concurrent(environ: Mapping[str, str] = os.environ) -> int:
    """How many steps of one run execute at once (SMS_MAX_CONCURRENT)."""
    return _count(environ, MAX_CONCURRENT_ENV, DEFAULT_MAX_CONCURRENT, MAX_MAX_CONCURRENT, "steps")


def api_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token /predict requires (SMS_API_TOKEN), or None when unset or empty: no token."""
    token = environ.get(API_TOKEN_ENV) or ""
    if not token:
        return None
    if not _BEARER_TOKEN.fullmatch(token):
        raise BadSetting(
            f"{API_TOKEN_ENV} holds a character a bearer token cannot carry (spaces, quotes and "
            "non-ASCII among them): use letters, digits and - . _ ~ + /, then optional = padding "
            "(its value is not shown)"
        )
    if len(token) < MIN_API_TOKEN_CHARS:
        raise BadSetting(
            f"{API_TOKEN_ENV} is {len(token)} characters long; use at least {MIN_API_TOKEN_CHARS}, "
            "e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def api_deadline_s(environ: Mapping[str, str] = os.environ) -> float:
    """How long a prediction request may wait for Redis or Postgres, in seconds (SMS_API_DEADLINE_S)."""
    raw = (environ.get(API_DEADLINE_ENV) or "").strip()
    if not raw:
        return DEFAULT_API_DEADLINE_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadSetting(f"{API_DEADLINE_ENV}={raw[:20]!r}: give a number of seconds above 0")
    return seconds

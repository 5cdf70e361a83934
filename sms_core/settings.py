"""The project's settings: `SMS_*` environment variables, typed and checked by pydantic-settings, each
with its documented default, in one place.

Every process reads them the same way, wherever it starts (the `sms-assets` commands, `dagster` and
`dg` commands, the code server, a run worker, a step process, the API's workers): `load()` for the
values as set, `Settings.postgres()` / `.redis()` for a service URL, which starts the embedded server
under the state folder when the variable is unset (`embedded.py`). A malformed value is a BadSetting,
one line naming the variable; a secret's value is never shown.

Each variable, its default and what it does: docs/configuration.md, whose table
tests/unit/test_docs_links.py checks against the fields below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sms_core import urls

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFIX = "SMS_"
DEFAULT_FEAST_PROJECT = "sms_assets"
DEFAULT_STATE_DIR = PROJECT_ROOT / ".sms_state"
DEFAULT_API_DEADLINE_S = 3.0
DEFAULT_LOG_QUEUE = 100_000
MIN_API_TOKEN_CHARS = 16
# RFC 6750's b64token: what a client sends after "Bearer " byte for byte, with no quoting.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Shown in an error as `SMS_X is ...`, never `SMS_X='value'`.
_SECRETS = {"api_token"}


class BadSetting(ValueError):
    """A setting whose value cannot be used. The message names the variable, never a secret's value."""


class Settings(BaseSettings):
    """Every setting, from the environment (`SMS_` + the field's name in capitals)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    postgres_url: str | None = Field(
        default=None,
        description="libpq or SQLAlchemy URL; unset: the embedded Postgres under the state folder.",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db, or redis+cluster://host:port for a Redis Cluster; unset: the "
        "embedded Redis under the state folder.",
    )
    feast_project: str = Field(
        default=DEFAULT_FEAST_PROJECT,
        pattern=r"^[A-Za-z0-9_]+$",
        description="The Feast project: registry entries and Redis keys are scoped by it.",
    )
    state_dir: Path = Field(
        default=DEFAULT_STATE_DIR,
        description="Embedded servers, downloads, models, the landing folder, the local Dagster instance.",
    )
    model_dir: Path | None = Field(default=None, description="Model versions; unset: <state>/models.")
    landing_dir: Path | None = Field(default=None, description="Arriving batches; unset: <state>/landing.")
    dataset_path: Path | None = Field(
        default=None, description="A local SMSSpamCollection file; unset: download the UCI zip once."
    )
    dataset_holdback: int = Field(
        default=0, ge=0, description="The last N messages, left out of the initial load for `simulate`."
    )
    executor: Literal["multiprocess", "k8s", "in_process"] = Field(
        default="multiprocess", description="Where a run's steps execute."
    )
    max_concurrent: int = Field(default=2, ge=1, le=64, description="Steps of one run at once.")
    api_workers: int = Field(default=1, ge=1, le=32, description="Server processes of `sms-assets serve`.")
    api_token: SecretStr | None = Field(
        default=None, description="The bearer token /predict requires; unset: no token."
    )
    api_deadline_s: float = Field(
        default=DEFAULT_API_DEADLINE_S,
        gt=0,
        allow_inf_nan=False,
        description="How long a request may wait for a store.",
    )
    log_answers: bool = Field(
        default=True, description="Whether the API logs its answers (docs/served-log.md)."
    )
    log_texts: bool = Field(
        default=False,
        description="Whether logged answers keep their texts; false: only each text's sha256 and length.",
    )
    log_queue: int = Field(
        default=DEFAULT_LOG_QUEUE,
        ge=1,
        le=10_000_000,
        description="Answers waiting to be logged, at most, per server process; beyond, answers are dropped.",
    )

    @field_validator("postgres_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None:
            urls.postgres(url)  # BadUrl, naming what is wrong without the password
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None:
            urls.redis_kwargs(url)
        return url

    @field_validator("state_dir", "model_dir", "landing_dir", "dataset_path")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Every process resolves a relative folder against where it started: made absolute once here.
        return path.expanduser().resolve() if path is not None else None

    @field_validator("api_token")
    @classmethod
    def _bearer(cls, token: SecretStr | None) -> SecretStr | None:
        value = token.get_secret_value() if token is not None else ""
        if token is not None and not _BEARER_TOKEN.fullmatch(value):
            raise ValueError(
                "holds a character a bearer token cannot carry (spaces, quotes and non-ASCII among "
                "them): use letters, digits and - . _ ~ + /, then optional = padding"
            )
        if token is not None and len(value) < MIN_API_TOKEN_CHARS:
            raise ValueError(
                f"is {len(value)} characters long; use at least {MIN_API_TOKEN_CHARS}, e.g. from: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return token

    @property
    def models(self) -> Path:
        return self.model_dir or self.state_dir / "models"

    @property
    def landing(self) -> Path:
        return self.landing_dir or self.state_dir / "landing"

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    def state(self) -> Path:
        """The state folder, created when missing."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir

    def postgres(self) -> str:
        """SMS_POSTGRES_URL, else the embedded Postgres (started when it is not running)."""
        from sms_core import embedded

        return self.postgres_url or embedded.postgres_url(self.state())

    def redis(self) -> str:
        """SMS_REDIS_URL, else the embedded Redis (started when it is not running)."""
        from sms_core import embedded

        return self.redis_url or embedded.redis_url(self.state())

    def resolved(self) -> Settings:
        """These settings with both service URLs filled in (starting embedded servers as needed)."""
        return self.model_copy(update={"postgres_url": self.postgres(), "redis_url": self.redis()})

    def env(self) -> dict[str, str]:
        """The variables that give a child process these settings: every one that is set, and the
        folders derived from the state folder. Never the token: a child inherits it, and what this
        returns is printed (`sms-assets services env`)."""
        values = self.model_dump(exclude_none=True, exclude=_SECRETS)
        values.update(model_dir=self.models, landing_dir=self.landing)
        return {variable(name): str(value) for name, value in values.items()}


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return f"{PREFIX}{field.upper()}"


POSTGRES_ENV = variable("postgres_url")
REDIS_ENV = variable("redis_url")
PROJECT_ENV = variable("feast_project")
STATE_ENV = variable("state_dir")
MODEL_DIR_ENV = variable("model_dir")
LANDING_ENV = variable("landing_dir")
DATASET_ENV = variable("dataset_path")
HOLDBACK_ENV = variable("dataset_holdback")
EXECUTOR_ENV = variable("executor")
MAX_CONCURRENT_ENV = variable("max_concurrent")
API_WORKERS_ENV = variable("api_workers")
API_TOKEN_ENV = variable("api_token")
API_DEADLINE_ENV = variable("api_deadline_s")
LOG_ANSWERS_ENV = variable("log_answers")
LOG_TEXTS_ENV = variable("log_texts")
LOG_QUEUE_ENV = variable("log_queue")
NAMES = tuple(variable(name) for name in Settings.model_fields)


class _Given(Settings):
    """Settings from the values given alone: a mapping handed to `load` is the whole environment."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_: Any, **__: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of the process environment, or of `environ` when given (a compose file's, a
    child's); BadSetting, one line naming each bad variable, when a value cannot be used."""
    try:
        if environ is None:
            return Settings()
        # Validated alone, without reading the process environment; as pydantic-settings reads it, a
        # variable set to "" is unset.
        given = {
            name: environ[variable(name)] for name in Settings.model_fields if environ.get(variable(name))
        }
        return _Given.model_validate(given)
    except ValidationError as invalid:
        raise BadSetting("; ".join(_problem(error) for error in invalid.errors())) from None


def resolve(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a child process needs to see exactly these settings, both service URLs filled in
    (starting embedded servers for unset ones)."""
    return load(environ).resolved().env()


def _problem(error: Mapping[str, Any]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    name = variable(field)
    message = str(error["msg"]).removeprefix("Value error, ")
    if field in _SECRETS:
        return f"{name} {message} (its value is not shown)"
    if message.startswith(name):  # the validator named it already (urls.BadUrl)
        return message
    value = str(error.get("input", ""))
    shown = urls.redact(value) if field.endswith("_url") else value[:40]
    return f"{name}={shown!r}: {message}"

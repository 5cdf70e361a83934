"""The prediction API's own settings: the worker count, the bearer token, the request deadline and the
served log, and how a bad one is refused."""

import os
import subprocess
from pathlib import Path

import pytest

from sms_api.service import ServiceConfig
from sms_assets import cli
from sms_core import settings
from tests.conftest import PROJECT_ROOT

TOKEN = "Zq8-vT_2sLw~k.9+/mXa="


def test_without_a_token_the_api_is_open_and_one_worker_serves() -> None:
    assert settings.load({}).token is None
    assert settings.load({settings.API_TOKEN_ENV: ""}).token is None
    assert settings.load({}).api_workers == 1
    assert settings.load({settings.API_WORKERS_ENV: ""}).api_workers == 1


def test_a_token_of_bearer_characters_is_taken_as_it_is() -> None:
    chosen = settings.load({settings.API_TOKEN_ENV: TOKEN})
    assert chosen.token == TOKEN
    assert TOKEN not in repr(chosen) and TOKEN not in str(chosen)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short-token", "is 11 characters long; use at least 16"),
        (f" {TOKEN}", "holds a character a bearer token cannot carry"),  # as a stray space in .env leaves it
        (f"{TOKEN}\n", "holds a character a bearer token cannot carry"),
        (f'"{TOKEN}"', "holds a character a bearer token cannot carry"),
        ("tökén-with-umlauts-1234", "holds a character a bearer token cannot carry"),
        ("=padding-first-0123456789", "holds a character a bearer token cannot carry"),
    ],
)
def test_an_unusable_token_is_refused_naming_the_variable_never_the_value(token: str, problem: str) -> None:
    with pytest.raises(settings.BadSetting) as refused:
        settings.load({settings.API_TOKEN_ENV: token})
    message = str(refused.value)
    assert message.startswith(f"{settings.API_TOKEN_ENV} ")
    assert problem in message
    assert token.strip().strip('"') not in message


@pytest.mark.parametrize(("raw", "workers"), [("1", 1), ("2", 2), (" 4 ", 4), ("32", 32)])
def test_the_worker_count_is_a_whole_number(raw: str, workers: int) -> None:
    assert settings.load({settings.API_WORKERS_ENV: raw}).api_workers == workers


@pytest.mark.parametrize("raw", ["0", "-1", "33", "1.5", "two", "²", "9" * 40])
def test_a_bad_worker_count_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(settings.BadSetting, match=f"^{settings.API_WORKERS_ENV}=.*: Input should be"):
        settings.load({settings.API_WORKERS_ENV: raw})


@pytest.mark.parametrize(("raw", "seconds"), [(None, 3.0), ("", 3.0), ("0.5", 0.5), (" 10 ", 10.0)])
def test_the_request_deadline_is_a_number_of_seconds(raw: str | None, seconds: float) -> None:
    environ = {} if raw is None else {settings.API_DEADLINE_ENV: raw}
    assert settings.load(environ).api_deadline_s == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "1e400", "3s", "soon", "²"])
def test_a_bad_request_deadline_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(settings.BadSetting, match=f"^{settings.API_DEADLINE_ENV}=.*: Input should be"):
        settings.load({settings.API_DEADLINE_ENV: raw})


def test_the_served_log_is_on_its_texts_off_and_its_queue_bounded_by_default(tmp_path: Path) -> None:
    environ = {
        settings.POSTGRES_ENV: "postgresql://app:pw@db:5432/sms",
        settings.REDIS_ENV: "redis://cache:6379/0",
        settings.STATE_ENV: str(tmp_path),
    }
    config = ServiceConfig.from_environment(environ)
    assert (config.log_answers, config.log_texts, config.log_queue) == (
        True,
        False,
        settings.DEFAULT_LOG_QUEUE,
    )
    chosen = {settings.LOG_ANSWERS_ENV: "false", settings.LOG_TEXTS_ENV: "1", settings.LOG_QUEUE_ENV: "500"}
    config = ServiceConfig.from_environment({**environ, **chosen})
    assert (config.log_answers, config.log_texts, config.log_queue) == (False, True, 500)


@pytest.mark.parametrize(
    ("setting", "raw"),
    [
        (settings.LOG_QUEUE_ENV, "0"),
        (settings.LOG_QUEUE_ENV, "lots"),
        (settings.LOG_QUEUE_ENV, "1" * 12),
        (settings.LOG_TEXTS_ENV, "maybe"),
        (settings.LOG_ANSWERS_ENV, "2"),
    ],
)
def test_a_bad_served_log_setting_is_refused_naming_the_variable(setting: str, raw: str) -> None:
    with pytest.raises(settings.BadSetting, match=f"^{setting}='{raw}': Input should be"):
        settings.load({setting: raw})


def test_the_service_config_takes_the_token_from_the_environment_and_never_shows_it(tmp_path: Path) -> None:
    environ = {
        settings.POSTGRES_ENV: "postgresql://app:pw@db:5432/sms",
        settings.REDIS_ENV: "redis://cache:6379/0",
        settings.STATE_ENV: str(tmp_path),
        settings.API_TOKEN_ENV: TOKEN,
    }
    config = ServiceConfig.from_environment(environ)
    assert config.api_token == TOKEN
    assert config.deadline_s == settings.DEFAULT_API_DEADLINE_S
    assert config.model_root == tmp_path / "models"
    assert TOKEN not in repr(config) and TOKEN not in str(config)


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        (settings.API_TOKEN_ENV, "hunter2", "error: SMS_API_TOKEN is 7 characters long; use at least 16"),
        (
            settings.API_WORKERS_ENV,
            "0",
            "error: SMS_API_WORKERS='0': Input should be greater than or equal to 1",
        ),
        (
            settings.API_DEADLINE_ENV,
            "soon",
            "error: SMS_API_DEADLINE_S='soon': Input should be a valid number",
        ),
        (
            settings.REDIS_ENV,
            "redis://cache:6379/x",
            "error: SMS_REDIS_URL database must be a number, got 'x'",
        ),
        (
            settings.POSTGRES_ENV,
            "postgresql://app:s3cret@db:99999/sms",
            "error: SMS_POSTGRES_URL port must be 1 to 65535, got 99999",
        ),
        (settings.REDIS_ENV, "redis://cache:0/0", "error: SMS_REDIS_URL port must be 1 to 65535, got 0"),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line_before_it_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
    line: str,
) -> None:
    env = {key: val for key, val in os.environ.items() if not key.startswith("SMS_")}
    env.update(
        {
            # Never contacted: the settings are checked before anything connects.
            settings.POSTGRES_ENV: "postgresql://app:pw@127.0.0.1:1/sms",
            settings.REDIS_ENV: "redis://127.0.0.1:1/0",
            settings.STATE_ENV: str(tmp_path),
            setting: value,
        }
    )
    if setting != settings.API_TOKEN_ENV:
        # The command's own code, in this process: the console script is run once, for the token below.
        for key in [key for key in os.environ if key.startswith("SMS_")]:
            monkeypatch.delenv(key)
        for key, val in env.items():
            monkeypatch.setenv(key, val)
        assert cli.main(["serve", "--port", "1"]) == 1
        printed = capsys.readouterr()
        assert printed.out == ""
        [error] = printed.err.strip().splitlines()
        assert error.startswith(line)
        return
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "sms-assets"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(line)
    if setting == settings.API_TOKEN_ENV:
        assert value not in result.stderr


def test_settings_given_as_a_mapping_read_nothing_else_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A child's environment is the whole of it: a variable of this process (a test session's model
    folder, say) must not leak into the settings made for another slice."""
    monkeypatch.setenv(settings.MODEL_DIR_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.setenv(settings.API_WORKERS_ENV, "3")
    given = settings.load({settings.STATE_ENV: str(tmp_path / "state")})
    assert given.models == tmp_path / "state" / "models"
    assert given.api_workers == 1
    assert settings.load().models == tmp_path / "elsewhere"

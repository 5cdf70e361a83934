"""SMS_EXECUTOR and SMS_MAX_CONCURRENT: their defaults, what they accept, and one clear error otherwise."""

from __future__ import annotations

import pytest

from sms_core import settings


@pytest.mark.parametrize(("raw", "kind"), [(None, "multiprocess"), ("", "multiprocess"), ("k8s", "k8s")])
def test_the_executor_defaults_to_multiprocess(raw: str | None, kind: str) -> None:
    environ = {} if raw is None else {settings.EXECUTOR_ENV: raw}
    assert settings.load(environ).executor == kind


@pytest.mark.parametrize("kind", ["multiprocess", "k8s", "in_process"])
def test_each_executor_is_accepted(kind: str) -> None:
    assert settings.load({settings.EXECUTOR_ENV: kind}).executor == kind


@pytest.mark.parametrize("raw", ["kubernetes", "K8S", "celery", "in-process", " k8s "])
def test_an_unknown_executor_is_refused_naming_the_variable_and_the_choices(raw: str) -> None:
    with pytest.raises(settings.BadSetting) as refused:
        settings.load({settings.EXECUTOR_ENV: raw})
    assert (
        str(refused.value) == f"SMS_EXECUTOR={raw!r}: Input should be 'multiprocess', 'k8s' or 'in_process'"
    )


@pytest.mark.parametrize(("raw", "steps"), [(None, 2), ("", 2), ("1", 1), (" 8 ", 8), ("64", 64)])
def test_the_steps_at_once_are_a_whole_number(raw: str | None, steps: int) -> None:
    environ = {} if raw is None else {settings.MAX_CONCURRENT_ENV: raw}
    assert settings.load(environ).max_concurrent == steps


@pytest.mark.parametrize("raw", ["0", "-1", "65", "1.5", "two", "²"])
def test_a_bad_step_count_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(settings.BadSetting, match=rf"^SMS_MAX_CONCURRENT='{raw}': Input should be "):
        settings.load({settings.MAX_CONCURRENT_ENV: raw})

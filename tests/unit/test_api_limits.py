"""The excerpt an error may quote of what a client sent: short, and writable as JSON whatever it was."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sms_api.errors import EXCERPT_CHARS, excerpt


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        "a \ud800",
        "\udfff" * 10_000,
        "x" * 1_000_000,
        math.nan,
        -math.inf,
        10**4000,
        nested(900),
        {f"key {i}": "v" * 1000 for i in range(1000)},
        list(range(100_000)),
        b"\xff" * 1000,
        None,
    ],
)
def test_an_excerpt_is_short_and_can_be_written_as_json(value: Any) -> None:
    text = excerpt(value)
    assert 0 < len(text) <= EXCERPT_CHARS
    json.dumps(text, ensure_ascii=False).encode("utf-8")  # what JSONResponse does; raises on a surrogate


def test_an_excerpt_shows_the_start_of_a_long_value_and_escapes_a_surrogate() -> None:
    assert excerpt("a \ud800") == "'a \\ud800'"
    assert excerpt(math.nan) == "nan"
    assert excerpt("spam " * 1000).startswith("'spam spam")

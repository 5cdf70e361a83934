"""Input rules the OpenAPI document states as JSON Schema, which must mean what the validators do."""

from __future__ import annotations

import re
import sys

import pytest
from pydantic import ValidationError

from sms_api.schemas import NOT_BLANK, PredictBatchRequest, PredictRequest


def test_the_documented_not_blank_pattern_is_pythons_whitespace() -> None:
    pattern = re.compile(NOT_BLANK)
    characters = (chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    differ = [hex(ord(c)) for c in characters if c.isspace() == bool(pattern.fullmatch(c))]
    assert differ == []


@pytest.mark.parametrize("text", [" ", "\t\n", "\x1f", "\x85\u3000"])
def test_a_text_of_whitespace_only_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="non-whitespace"):
        PredictRequest.model_validate({"text": text})


def test_an_integral_number_is_an_id_however_it_is_written() -> None:
    # JSON Schema's `integer` admits 42.0, and so does the API.
    assert PredictRequest.model_validate({"message_id": 42.0}).message_id == 42
    assert PredictBatchRequest.model_validate({"message_ids": [1.0, 2]}).message_ids == [1, 2]


@pytest.mark.parametrize("value", [4.2, "42", True, float("inf"), float("nan"), 2.0**63, -1.0])
def test_anything_else_is_no_id(value: object) -> None:
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"message_id": value})

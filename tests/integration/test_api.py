"""The prediction API over HTTP (uvicorn on loopback), against the real Redis and Postgres of the session."""

import contextlib
import itertools
import json
import select
import socket
from collections.abc import Iterator
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pytest

from sms_api.app import create_app
from sms_api.errors import EXCERPT_CHARS, MAX_ERRORS_LISTED
from sms_api.schemas import MAX_BATCH, MAX_BODY_BYTES, MAX_TEXT_CHARS
from sms_core.features.schema import TEXT_NAMES
from sms_core.model.pipelines import model_input, spam_scores
from sms_core.model.store import ModelStore
from sms_core.postgres import connect, query_frame
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config

pytestmark = pytest.mark.integration

UNKNOWN_ID = 999_999
# Not in the dataset: a message the service has never seen.
SPAM_TEXT = "WINNER!! You have been selected for a £900 PRIZE. Call 09061701461 now, claim code KL341!"


@pytest.fixture(scope="module")
def api(materialized: dg.ExecuteInProcessResult, isolated: Services) -> Iterator[httpx.Client]:
    with live_server(create_app(service_config(isolated))) as client:
        yield client


@pytest.fixture(scope="module")
def held_out(materialized: dg.ExecuteInProcessResult, isolated: Services) -> dict[str, Any]:
    """The served model's held-out messages: ids, texts and the training set's feature rows."""
    model = ModelStore(isolated.state_dir / "models").load()
    ids = model.manifest["test_message_ids"]
    with connect(isolated.postgres_url) as conn:
        frame = query_frame(
            conn,
            "SELECT t.*, r.text FROM sms_training_set t JOIN raw_sms_messages r USING (message_id) "
            f"WHERE message_id = ANY(ARRAY[{','.join(map(str, ids))}]::bigint[]) ORDER BY message_id",
        )
    return {"version": model.version, "frame": frame}


def offline_probabilities(isolated: Services, version: str, features: list[dict[str, Any]]) -> np.ndarray:
    """What the named model version gives offline for these feature rows."""
    model = ModelStore(isolated.state_dir / "models").load(version)
    names = model.manifest["features"]
    return spam_scores(model.model, model_input(names, {n: [row[n] for row in features] for n in names}))


def batched(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), MAX_BATCH):
        yield items[start : start + MAX_BATCH]


# --- the routes ------------------------------------------------------------------------------------


def test_predict_known_message(api: httpx.Client, isolated: Services) -> None:
    response = api.post("/predict", json={"message_id": 42})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] == 42
    assert body["label"] in ("ham", "spam")
    # The default model reads sms_service_v2: the message text, turned into n-grams inside the model.
    assert list(body["features"]) == list(TEXT_NAMES)
    assert len(body["model_version"]) == 16
    [expected] = offline_probabilities(isolated, body["model_version"], [body["features"]])
    assert body["spam_probability"] == pytest.approx(expected, abs=1e-12)


def test_predict_new_text(api: httpx.Client) -> None:
    response = api.post("/predict", json={"text": SPAM_TEXT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] is None
    assert body["label"] == "spam"
    # The served model reads the text itself (computed at request time by the same on-demand view).
    assert body["features"] == {name: SPAM_TEXT for name in TEXT_NAMES}
    assert len(body["model_version"]) == 16


def test_batch_of_ids_and_of_texts(api: httpx.Client) -> None:
    ids = api.post("/predict/batch", json={"message_ids": [1, 2, 3]})
    assert ids.status_code == 200, ids.text
    assert [p["message_id"] for p in ids.json()["predictions"]] == [1, 2, 3]
    texts = api.post("/predict/batch", json={"texts": ["see you at 5", SPAM_TEXT]})
    assert texts.status_code == 200, texts.text
    labels = [p["label"] for p in texts.json()["predictions"]]
    assert labels == ["ham", "spam"]
    assert len(ids.json()["model_version"]) == len(texts.json()["model_version"]) == 16


def test_health_and_ready(api: httpx.Client) -> None:
    health = api.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = api.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert ready.json()["checks"] == {
        "model": "ok",
        "redis": "ok",
        "postgres": "ok",
        "feature_store": "ok",
        "online_store": "ok",
    }
    assert ready.json()["model_version"] == health.json()["model_version"]


# --- consistency: the API scores as the model does offline -------------------------------------------


def test_api_predictions_equal_offline_predictions_on_held_out_set(
    api: httpx.Client, held_out: dict[str, Any], isolated: Services
) -> None:
    frame = held_out["frame"]
    model = ModelStore(isolated.state_dir / "models").load(held_out["version"])
    expected = spam_scores(model.model, model_input(model.manifest["features"], frame))
    by_id: list[float] = []
    by_text: list[float] = []
    for ids in batched(frame["message_id"].tolist()):
        response = api.post("/predict/batch", json={"message_ids": ids})
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == held_out["version"]
        by_id += [p["spam_probability"] for p in response.json()["predictions"]]
    for texts in batched(frame["text"].tolist()):
        response = api.post("/predict/batch", json={"texts": texts})
        assert response.status_code == 200, response.text
        by_text += [p["spam_probability"] for p in response.json()["predictions"]]
    assert len(by_id) == len(by_text) == len(frame) > 1000
    np.testing.assert_allclose(by_id, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(by_text, expected, rtol=0, atol=1e-12)


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/predict", {"message_id": "42"}, ["body", "message_id"]),
        ("/predict", {"message_id": 4.2}, ["body", "message_id"]),
        ("/predict", {"message_id": True}, ["body", "message_id"]),
        ("/predict", {"message_id": -1}, ["body", "message_id"]),
        ("/predict", {"message_id": 2**64}, ["body", "message_id"]),
        ("/predict", {"text": ""}, ["body", "text"]),
        ("/predict", {"text": " \t\n"}, ["body", "text"]),
        ("/predict", {"text": "x" * (MAX_TEXT_CHARS + 1)}, ["body", "text"]),
        ("/predict", {"text": 42}, ["body", "text"]),
        ("/predict", {"txt": "hello"}, ["body", "txt"]),
        ("/predict", {}, ["body"]),
        ("/predict", {"message_id": 1, "text": "both"}, ["body"]),
        ("/predict", [1, 2], ["body"]),
        ("/predict/batch", {"message_ids": []}, ["body", "message_ids"]),
        ("/predict/batch", {"message_ids": list(range(1, MAX_BATCH + 2))}, ["body", "message_ids"]),
        ("/predict/batch", {"message_ids": "1,2"}, ["body", "message_ids"]),
        ("/predict/batch", {"message_ids": [1, "2"]}, ["body", "message_ids", 1]),
        ("/predict/batch", {"texts": ["fine", ""]}, ["body", "texts", 1]),
        ("/predict/batch", {"texts": ["x" * (MAX_TEXT_CHARS + 1)]}, ["body", "texts", 0]),
        ("/predict/batch", {"message_ids": [1], "texts": ["both"]}, ["body"]),
    ],
)
def test_bad_input_is_422_naming_the_field(api: httpx.Client, path: str, body: Any, field: list[Any]) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert field in locations, locations
    assert "Traceback" not in response.text


JSON = {"content-type": "application/json"}


def post_raw(
    api: httpx.Client, path: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return api.post(path, content=body, headers=JSON if headers is None else headers)


@pytest.mark.parametrize(
    ("path", "body", "loc", "msg", "echo"),
    [
        # A lone surrogate is valid JSON but no character: FastAPI's handler could not even write it back.
        ("/predict", rb'{"text": "a \ud800"}', ["body", "text"], "valid string", "'a \\ud800'"),
        ("/predict/batch", rb'{"texts": ["ok", "\udfff"]}', ["body", "texts", 1], "valid string", None),
        ("/predict", rb'{"\ud800": 1}', ["body"], "valid string", None),
        # Python's JSON parser reads NaN and Infinity, which are no integer.
        ("/predict", b'{"message_id": NaN}', ["body", "message_id"], "valid integer", "nan"),
        ("/predict", b'{"message_id": -Infinity}', ["body", "message_id"], "valid integer", "-inf"),
        ("/predict/batch", b'{"message_ids": [1, Infinity]}', ["body", "message_ids", 1], "integer", "inf"),
        ("/predict/batch", b'{"texts": [NaN]}', ["body", "texts", 0], "valid string", "nan"),
        ("/predict", b'{"message_id": 1e999999}', ["body", "message_id"], "valid integer", "inf"),
        ("/predict", b'{"message_id": 1' + b"0" * 4000 + b"}", ["body", "message_id"], "less than", None),
        ("/predict", b"null", ["body"], "dictionary", None),
        ("/predict", b"[" * 500 + b"]" * 500, ["body"], "dictionary", None),
    ],
)
def test_hostile_json_is_422_naming_the_field_with_a_short_excerpt(
    api: httpx.Client, path: str, body: bytes, loc: list[Any], msg: str, echo: str | None
) -> None:
    response = post_raw(api, path, body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    [error] = [e for e in errors if e["loc"] == loc]
    assert msg in error["msg"]
    assert len(error["input"]) <= EXCERPT_CHARS
    if echo is not None:
        assert error["input"] == echo
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"message_id": 4', "Expecting ',' delimiter: line 1 column 17 (char 16)"),
        (
            b'{\n  "message_id": 4,\n  x}',
            "Expecting property name enclosed in double quotes: line 3 column 3",
        ),
        (b'{"text": "unterminated}', "Unterminated string starting at: line 1 column 10 (char 9)"),
        (b"{'text': 'single quotes'}", "line 1 column 2 (char 1)"),
    ],
)
def test_malformed_json_is_422_saying_where(api: httpx.Client, body: bytes, where: str) -> None:
    response = post_raw(api, "/predict", body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["loc"][0] == "body"
    assert where in error["msg"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "the JSON nests arrays or objects too deeply to parse"),
        (b'{"message_ids": [1' + b"0" * 5000 + b"]}", "Exceeds the limit (4300 digits)"),
        (b'{"text": "caf\xe9"}', "the body is not UTF-8 JSON: invalid continuation byte at byte 13"),
    ],
)
def test_body_the_json_parser_refuses_is_400_saying_why(api: httpx.Client, body: bytes, detail: str) -> None:
    response = post_raw(api, "/predict/batch" if b"message_ids" in body else "/predict", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_body"
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415_naming_it(api: httpx.Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = post_raw(api, "/predict", b'{"message_id": 42}', headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert "application/json" in response.json()["detail"]
    assert repr(content_type or "none") in response.json()["detail"]


def test_empty_body_is_422_saying_so(api: httpx.Client) -> None:
    response = post_raw(api, "/predict", b"")
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert error["msg"].startswith("the body is empty")


def test_errors_echo_only_a_short_excerpt_of_the_input(api: httpx.Client) -> None:
    too_long = "spam " * (MAX_TEXT_CHARS // 4)  # 2.5 times the longest text allowed
    response = api.post("/predict/batch", json={"texts": [too_long] * MAX_BATCH})  # 2.5 MB
    assert response.status_code == 422
    body = response.json()
    assert body["error_count"] == MAX_BATCH
    assert len(body["detail"]) == MAX_ERRORS_LISTED
    assert all(len(error["input"]) <= EXCERPT_CHARS for error in body["detail"])
    assert len(response.content) < 10_000
    # A key the client invented is input too.
    response = api.post("/predict", json={"x" * 10_000: 1})
    assert response.status_code == 422
    assert len(response.content) < 1_000


# --- the body limit: the largest valid request passes, anything above it is refused unread --------


def http_exchange(api: httpx.Client, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """A raw HTTP/1.1 request: `head`, then `chunks` until the server answers; (answer, bytes sent)."""
    with socket.create_connection((api.base_url.host, api.base_url.port), timeout=60) as sock:
        sock.sendall(head)
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server closed the connection
            sent += len(chunk)
        answer = b""
        with contextlib.suppress(OSError):  # the server may reset the connection once it has answered
            while data := sock.recv(65536):
                answer += data
    return answer, sent


def assert_413(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["error"] == "body_too_large"
    assert f"{MAX_BODY_BYTES:,} bytes" in error["detail"]


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(api: httpx.Client) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: 50000000\r\n\r\n"  # 50 MB, of which nothing is sent
    answer, sent = http_exchange(api, head, iter(()))
    assert sent == 0
    assert_413(answer)


def test_a_chunked_body_over_the_limit_is_413_once_it_passes_the_limit(api: httpx.Client) -> None:
    head = b"POST /predict/batch HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    megabyte = b"x" * 2**20
    chunk = b"%x\r\n%s\r\n" % (len(megabyte), megabyte)
    answer, sent = http_exchange(api, head, itertools.repeat(chunk, 100))  # up to 100 MB
    assert_413(answer)
    # Refused once past the limit, not after reading everything the client would send.
    assert sent < 2 * MAX_BODY_BYTES


def test_the_largest_valid_request_fits_under_the_limit(api: httpx.Client) -> None:
    # Every character outside the Basic Multilingual Plane: json.dumps writes each as 12 bytes.
    texts = ["\U0001f600" * MAX_TEXT_CHARS] * MAX_BATCH
    body = json.dumps({"texts": texts}).encode()
    assert MAX_BODY_BYTES - 10_000 < len(body) <= MAX_BODY_BYTES
    response = post_raw(api, "/predict/batch", body)
    assert response.status_code == 200, response.text[:300]
    predictions = response.json()["predictions"]
    assert len(predictions) == MAX_BATCH
    assert {p["label"] for p in predictions} <= {"ham", "spam"}


def test_unknown_message_id_is_404_naming_it(api: httpx.Client) -> None:
    response = api.post("/predict", json={"message_id": UNKNOWN_ID})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown_message_id"
    assert body["message_ids"] == [UNKNOWN_ID]
    assert str(UNKNOWN_ID) in body["detail"]
    batch = api.post("/predict/batch", json={"message_ids": [1, UNKNOWN_ID, 2]})
    assert batch.status_code == 404
    assert batch.json()["message_ids"] == [UNKNOWN_ID]


def test_service_keeps_serving_after_bad_requests(api: httpx.Client) -> None:
    for body in ({"text": ""}, {"message_id": UNKNOWN_ID}, {"message_id": "x"}):
        assert api.post("/predict", json=body).status_code in (404, 422)
    assert post_raw(api, "/predict", rb'{"text": "\ud800"}').status_code == 422
    assert post_raw(api, "/predict", b"[" * 100_000).status_code == 400
    assert api.post("/predict", json={"message_id": 7}).status_code == 200
    assert api.post("/predict", json={"text": "still here?"}).status_code == 200

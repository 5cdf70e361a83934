"""The prediction API over HTTP (uvicorn on loopback), against the real Redis and Postgres of the session."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pytest

from sms_api.app import create_app
from sms_api.schemas import MAX_BATCH, MAX_TEXT_CHARS
from sms_assets.defs.features.schema import TEXT_NAMES
from sms_assets.defs.training.model import model_input, spam_scores
from sms_assets.lib.model_store import ModelStore
from sms_assets.lib.postgres import connect, query_frame
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
    assert ready.json()["checks"] == {"model": "ok", "redis": "ok", "postgres": "ok", "feature_store": "ok"}
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


def test_malformed_json_is_422(api: httpx.Client) -> None:
    response = api.post("/predict", content=b'{"message_id": 4', headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["loc"][0] == "body"


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
    assert api.post("/predict", json={"message_id": 7}).status_code == 200
    assert api.post("/predict", json={"text": "still here?"}).status_code == 200

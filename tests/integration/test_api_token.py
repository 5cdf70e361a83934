"""The bearer token (SMS_API_TOKEN) over HTTP: the prediction routes need it, the health routes do not,
and neither the token nor what a client sent in its place shows up in an answer or a log line."""

import logging
import secrets
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest

from sms_api.app import create_app
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config

pytestmark = pytest.mark.integration

TOKEN = secrets.token_urlsafe(32)
WRONG_SAME_LENGTH = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
ROUTES = [("/predict", {"message_id": 42}), ("/predict", {"text": "see you at 5"})]
ROUTES += [("/predict/batch", {"message_ids": [1, 2]}), ("/predict/batch", {"texts": ["hi"]})]


@pytest.fixture(scope="module")
def api(materialized: dg.ExecuteInProcessResult, isolated: Services) -> Iterator[httpx.Client]:
    with live_server(create_app(service_config(isolated, api_token=TOKEN))) as client:
        yield client


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_the_prediction_routes_answer_with_the_token(api: httpx.Client, path: str, body: dict) -> None:
    for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive (RFC 7235)
        response = api.post(path, json=body, headers={"Authorization": f"{scheme} {TOKEN}"})
        assert response.status_code == 200, response.text
        assert len(response.json()["model_version"]) == 16


# (header value, what the 401 says, its WWW-Authenticate challenge)
MISSING = "missing Authorization header: send 'Authorization: Bearer <token>'"
NOT_BEARER = "the Authorization header is not 'Bearer <token>'"
WRONG = "the bearer token is not the one this service was started with"
REFUSED: list[tuple[bytes | None, str, str]] = [
    (None, MISSING, "Bearer"),
    (b"", NOT_BEARER, "Bearer"),
    (b"Bearer", NOT_BEARER, "Bearer"),
    (f"Basic {TOKEN}".encode(), NOT_BEARER, "Bearer"),
    (TOKEN.encode(), NOT_BEARER, "Bearer"),
    (f"Token {TOKEN}".encode(), NOT_BEARER, "Bearer"),
    (f"Bearer {WRONG_SAME_LENGTH}".encode(), WRONG, 'Bearer error="invalid_token"'),
    (f"Bearer {TOKEN[:-1]}".encode(), WRONG, 'Bearer error="invalid_token"'),
    (f"Bearer {TOKEN}x".encode(), WRONG, 'Bearer error="invalid_token"'),
    (f"Bearer {TOKEN} {TOKEN}".encode(), WRONG, 'Bearer error="invalid_token"'),
    (f"Bearer {TOKEN.upper()}".encode(), WRONG, 'Bearer error="invalid_token"'),
    # Bytes outside ASCII, as a client may send them: refused like any other wrong token, not a 500.
    ("Bearer tökén-ünïcode-€".encode(), WRONG, 'Bearer error="invalid_token"'),
    (b"Bearer \xff\xfe\x80", WRONG, 'Bearer error="invalid_token"'),
]


@pytest.mark.parametrize(("path", "body"), ROUTES[::2])
@pytest.mark.parametrize(("header", "detail", "challenge"), REFUSED)
def test_without_the_right_token_a_prediction_is_a_401_saying_what_is_wrong(
    api: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict,
    header: bytes | None,
    detail: str,
    challenge: str,
) -> None:
    headers = {} if header is None else {b"Authorization": header}
    with caplog.at_level(logging.DEBUG):
        response = api.post(path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "detail": detail}
    assert response.headers["www-authenticate"] == challenge
    for secret in (TOKEN, WRONG_SAME_LENGTH, TOKEN[:-1]):
        assert secret not in response.text
        assert secret not in caplog.text


def test_health_and_ready_stay_open(api: httpx.Client) -> None:
    assert api.get("/health").status_code == 200
    ready = api.get("/ready")
    assert ready.status_code == 200, ready.text
    assert TOKEN not in ready.text


def test_bad_input_with_the_token_is_still_named_and_without_it_is_refused(api: httpx.Client) -> None:
    bad = {"message_id": "42"}
    with_token = api.post("/predict", json=bad, headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_token.status_code == 422
    assert TOKEN not in with_token.text
    # Authentication comes before validating the fields: a stranger learns nothing about the rules.
    assert api.post("/predict", json=bad).status_code == 401


def test_the_openapi_document_declares_the_bearer_scheme_on_the_prediction_routes_only(
    isolated: Services,
) -> None:
    with_token = create_app(service_config(isolated, api_token=TOKEN)).openapi()
    [(name, scheme)] = with_token["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    security = {
        path: ops.get("post", ops.get("get", {})).get("security") for path, ops in with_token["paths"].items()
    }
    assert security == {
        "/predict": [{name: []}],
        "/predict/batch": [{name: []}],
        "/health": None,
        "/ready": None,
    }
    assert TOKEN not in str(with_token)

    open_ = create_app(service_config(isolated)).openapi()
    assert "securitySchemes" not in open_.get("components", {})
    assert all("security" not in op for ops in open_["paths"].values() for op in ops.values())

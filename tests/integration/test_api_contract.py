"""The API against its own OpenAPI document, over HTTP with the real Redis and Postgres behind it.

schemathesis generates requests for every operation, valid and invalid, with and without the bearer token,
and checks each answer against the document: a declared status, its content type and body schema, never a
server error, invalid input refused and valid input accepted. The answers it does not reach by generating
JSON (a body that is not UTF-8, another content type, one over the size limit) are sent here and checked
the same way.
"""

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sms_api.app import create_app
from sms_api.service import ServiceConfig
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config
from tests.integration.test_api import http_exchange

pytestmark = pytest.mark.integration

TOKEN = secrets.token_urlsafe(32)
# Per operation: schemathesis's default number of examples, which on 2 cores takes seconds.
EXAMPLES = 100


def document(api_token: str | None) -> dict:
    """The app's OpenAPI document. It depends on the code and on whether a token is set, not on where the
    stores are: built here, at collection, because schemathesis makes one test per operation then.
    `test_the_served_document_is_the_one_tested` checks that the served app publishes the same."""
    unused = ServiceConfig("postgresql://unused/unused", "redis://unused:6379/0", "unused", Path("unused"))
    return create_app(ServiceConfig(**{**vars(unused), "api_token": api_token})).openapi()


open_schema = schemathesis.openapi.from_dict(document(None))
guarded_schema = schemathesis.openapi.from_dict(document(TOKEN))
# Speed is the benchmarks' business, not the contract's: no deadline per example, nor a health check on it.
bounded = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def open_api(materialized: dg.ExecuteInProcessResult, isolated: Services) -> Iterator[httpx.Client]:
    with live_server(create_app(service_config(isolated))) as client:
        yield client


@pytest.fixture(scope="module")
def guarded_api(materialized: dg.ExecuteInProcessResult, isolated: Services) -> Iterator[httpx.Client]:
    with live_server(create_app(service_config(isolated, api_token=TOKEN))) as client:
        yield client


def test_the_served_document_is_the_one_tested(open_api: httpx.Client, guarded_api: httpx.Client) -> None:
    assert open_api.get("/openapi.json").json() == open_schema.raw_schema
    assert guarded_api.get("/openapi.json").json() == guarded_schema.raw_schema


@open_schema.parametrize()
@bounded
def test_without_a_token_every_answer_is_the_one_the_document_declares(
    case: schemathesis.Case, open_api: httpx.Client
) -> None:
    case.call_and_validate(base_url=str(open_api.base_url))


@guarded_schema.parametrize()
@bounded
def test_with_a_token_every_answer_is_the_one_the_document_declares(
    case: schemathesis.Case, guarded_api: httpx.Client
) -> None:
    # schemathesis also sends each request without the token, and with a wrong one, expecting a 401.
    case.call_and_validate(base_url=str(guarded_api.base_url), headers={"Authorization": f"Bearer {TOKEN}"})


def assert_declared(schema: schemathesis.BaseSchema, path: str, response: httpx.Response) -> None:
    """The response's status is one the operation declares, and its body has the declared schema."""
    declared = schema.raw_schema["paths"][path]["post"]["responses"]
    assert str(response.status_code) in declared, (response.status_code, sorted(declared))
    schema[path]["POST"].validate_response(response)


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/predict", b'{"text": "caf\xe9"}', JSON, 400),
        ("/predict/batch", b"[" * 100_000, JSON, 400),
        ("/predict", b'{"message_id": 999999}', JSON, 404),
        ("/predict/batch", b'{"message_ids": [1, 999999]}', JSON, 404),
        ("/predict", b'{"message_id": 42}', {"content-type": "text/plain"}, 415),
        ("/predict/batch", b'{"texts": ["hi"]}', {}, 415),
        ("/predict", b'{"message_id": 4', JSON, 422),  # malformed JSON: an error that quotes no input
        ("/predict/batch", b'{"texts": [42]}', JSON, 422),
    ],
)
def test_answers_to_bodies_no_schema_describes_are_declared(
    open_api: httpx.Client, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = open_api.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert_declared(open_schema, path, response)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_body_over_the_limit_is_a_declared_413(open_api: httpx.Client, path: str) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    answer, _ = http_exchange(open_api, (head + "Content-Length: 50000000\r\n\r\n").encode(), iter(()))
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    fields = [line.split(b":", 1) for line in header_block.split(b"\r\n")]
    response = httpx.Response(
        int(status_line.split()[1]),
        headers=[(name.strip(), value.strip()) for name, value in fields],
        content=body,
        request=httpx.Request("POST", open_api.base_url.join(path)),
    )
    response.elapsed = timedelta()  # read off a raw socket, untimed; schemathesis asks for it
    assert response.status_code == 413
    assert_declared(open_schema, path, response)


def test_a_401_is_declared_with_its_challenge(guarded_api: httpx.Client) -> None:
    response = guarded_api.post("/predict", json={"message_id": 42})
    assert response.status_code == 401
    assert_declared(guarded_schema, "/predict", response)
    assert (
        "WWW-Authenticate"
        in guarded_schema.raw_schema["paths"]["/predict"]["post"]["responses"]["401"]["headers"]
    )
    assert response.headers["www-authenticate"] == "Bearer"

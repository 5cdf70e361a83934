"""/docs and /redoc load everything they need from the service itself: no CDN, no font service, no
validator, so the pages render where the service cannot reach the internet.

The pages and their assets touch neither Redis nor Postgres, so the app is asked in process, through
httpx's ASGI transport, without starting its service (no lifespan).
"""

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sms_api.app import create_app
from sms_api.service import ServiceConfig


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # Addresses nothing connects to: without the lifespan, the service is never started.
    models: Path = tmp_path_factory.mktemp("models")
    return create_app(ServiceConfig("postgresql://unused/unused", "redis://unused:6379/0", "unused", models))


def get(app: FastAPI, *urls: str) -> list[httpx.Response]:
    async def fetch() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return [await client.get(url) for url in urls]

    return asyncio.run(fetch())


class _Links(HTMLParser):
    """Every URL a page loads: script and style sources, icons, and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_service(app: FastAPI, page: str) -> None:
    [response] = get(app, page)
    assert response.status_code == 200
    assert "://" not in response.text  # no absolute URL anywhere on the page
    links = _Links()
    links.feed(response.text)
    # Swagger UI is given the document's URL in a script: `url: '/openapi.json'`.
    urls = links.urls + re.findall(r"url: '([^']*)'", response.text)
    assert "/openapi.json" in urls
    assert len(urls) >= 3, urls  # the script, the icon and the document (and Swagger UI's styles)
    assert all(url.startswith("/") for url in urls), urls
    assert {
        url: answer.status_code for url, answer in zip(urls, get(app, *urls), strict=True)
    } == dict.fromkeys(urls, 200)


def test_swagger_ui_is_not_pointed_at_an_online_validator(app: FastAPI) -> None:
    [response] = get(app, "/docs")
    assert '"validatorUrl": null' in response.text

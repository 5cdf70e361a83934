"""How the API is served: uvicorn with SMS_API_WORKERS processes, each building its app from the settings.

`sms-assets serve` calls `run`; uvicorn gets the app factory by name, so that each worker process builds
its own app, feature store and model watcher. `uvicorn --factory sms_api.server:app_from_environment`
serves the same app.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI

from sms_api.app import create_app
from sms_api.service import ServiceConfig
from sms_core import settings, urls

# Each worker answers its supervisor's ping from a thread that starts only once the new process has
# imported uvicorn; uvicorn's 5 s default replaced workers still starting on a busy two-core host.
WORKER_PING_TIMEOUT_S = 30


def app_from_environment() -> FastAPI:
    return create_app(ServiceConfig.from_environment())


def run(host: str, port: int, access_log: bool = False) -> None:
    # Resolved once (starting embedded servers for unset URLs) and exported: every worker builds its app
    # from the environment, so all of them serve from the same stores.
    chosen = settings.load()  # a bad setting fails here, once, before any worker starts
    os.environ.update(chosen.resolved().env())
    config = ServiceConfig.from_environment()
    workers = chosen.api_workers
    token = "required on /predict" if config.api_token else f"none ({settings.API_TOKEN_ENV} unset)"
    print(
        f"serving on http://{host}:{port} with {workers} worker(s) (Postgres "
        f"{urls.redact(config.postgres_url)}, Redis {urls.redact(config.redis_url)}, Feast project "
        f"{config.project}, models in {config.model_root}, bearer token {token}, request deadline "
        f"{config.deadline_s:g} s)",
        flush=True,
    )
    uvicorn.run(
        f"{__name__}:{app_from_environment.__name__}",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_PING_TIMEOUT_S,
        # Named rather than left to "auto", which falls back to asyncio's loop and the pure-Python h11
        # parser without a word when either is missing: both are declared (uvicorn[standard]).
        loop="uvloop",
        http="httptools",
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
    )

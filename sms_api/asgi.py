"""The ASGI entry point: the app built from the settings in the environment.

`sms-assets serve` hands uvicorn this factory by name, so that each worker process (SMS_API_WORKERS)
builds its own app, feature store and model watcher; `uvicorn --factory sms_api.asgi:app_from_environment`
runs the same.
"""

from __future__ import annotations

from fastapi import FastAPI

from sms_api.app import create_app
from sms_api.service import ServiceConfig


def app_from_environment() -> FastAPI:
    return create_app(ServiceConfig.from_environment())

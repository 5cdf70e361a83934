"""sms_assets: a Dagster asset graph running a Feast feature store for an SMS spam classifier."""

from sms_assets.definitions import defs

__all__ = ["defs"]

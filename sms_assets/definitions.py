"""The one Dagster entry point (`dg` and `dagster` commands, workspace.yaml, `-m sms_assets.definitions`):
every definition under `defs/`, loaded from the folder by Dagster itself.

Each domain folder (ingestion, features, feature_store, training, serving) holds its assets, checks,
jobs, schedules and sensors at module level; `defs/resources.py` adds the resources and the executor.
Nothing needs exporting first: every setting has its default (sms_core/settings.py).
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)

"""online_keys.py against the keys Feast itself writes: the format is Feast's, pinned here."""

from __future__ import annotations

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from sms_core import online_keys, prediction, urls
from sms_core.contracts import FEATURE_VIEW, VIEW_FEATURES
from sms_core.features.schema import FEATURES
from sms_core.postgres import connect, query_frame
from tests.conftest import Services

pytestmark = pytest.mark.integration

UNUSED_ID = 10**12  # far from the dataset's line numbers and the arrivals' ids


def test_the_key_is_the_one_feast_writes_and_deleting_it_removes_the_message(
    materialized: dg.ExecuteInProcessResult, resources: dict[str, Any], isolated: Services
) -> None:
    store = resources["feast"].store()
    row = {
        name: ["a text" if not kind.numeric else 0 if kind.exact else 0.5] for name, kind in FEATURES.items()
    }
    stamp = pd.Timestamp("2024-01-01", tz="UTC")
    store.write_to_online_store(
        FEATURE_VIEW, df=pd.DataFrame({"message_id": [UNUSED_ID], "event_timestamp": [stamp], **row})
    )
    client = urls.redis_client(isolated.redis_url)
    try:
        key = online_keys.entity_key(isolated.feast_project, UNUSED_ID)
        assert client.exists(key) == 1
        assert UNUSED_ID in online_keys.online_ids(isolated.redis_url, isolated.feast_project)
        assert prediction.online_features(store, [UNUSED_ID], VIEW_FEATURES)["uppercase_ratio"] == [0.5]

        assert online_keys.delete(isolated.redis_url, isolated.feast_project, [UNUSED_ID]) == 1
        assert client.exists(key) == 0
        with pytest.raises(prediction.UnknownMessageError):
            prediction.online_features(store, [UNUSED_ID], VIEW_FEATURES)
    finally:
        client.close()


def test_online_ids_lists_this_projects_messages_only(
    materialized: dg.ExecuteInProcessResult, resources: dict[str, Any], isolated: Services
) -> None:
    with connect(isolated.postgres_url) as conn:
        offline = set(query_frame(conn, "SELECT message_id FROM sms_features")["message_id"].astype(int))
    # A project whose name ends like this one's holds keys that end the same way; they are not listed.
    client = urls.redis_client(isolated.redis_url)
    lookalike = online_keys.entity_key("x" + isolated.feast_project, UNUSED_ID + 1)
    try:
        client.set(lookalike, b"not ours")
        listed = online_keys.online_ids(isolated.redis_url, isolated.feast_project)
        assert listed.dtype == np.int64 and listed.tolist() == sorted(offline)
    finally:
        client.delete(lookalike)
        client.close()

"""Arrivals end to end, as the daemon runs them: batches land, the sensors and the automation start the
runs, and every new message is served from Redis. Twice: once clean, once with Redis crashing in the
middle and coming back; both must end in the same state.

Redis here is a server of the test's own (never the machine's shared one), so it can be stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import dagster as dg
import pandas as pd
import pytest

from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.features import table as feature_table
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.ingestion.simulate import ArrivalStream, held_back
from sms_core import feast_config, urls
from sms_core.contracts import VIEW_FEATURES
from sms_core.features.compute import compute_features
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import connect, query_frame
from tests.conftest import Services, new_slice
from tests.daemon import InProcessDaemon
from tests.integration.conftest import build_resources, slice_definitions
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

HOLDBACK = 60
BATCHES = 6
# Fixed landing times make both replays land byte-identical batches, so their Redis states compare whole.
FIRST_LANDING = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.process:
        server.crash()


@dataclass
class Replay:
    slice_: Services
    message_ids: list[int]
    texts: dict[int, str]
    redis_errors: list[str]
    failed_runs: list[str]
    reconcile_during_outage: dg.ExecuteInProcessResult | None = None


def replay(
    slice_: Services,
    dataset: Path,
    redis_server: RedisServer,
    down_between: tuple[int, int] | None = None,
) -> Replay:
    """The initial load, then the held-back messages landed tick by tick, the daemon ticking after
    each landing, then ticks until nothing is left to do. With `down_between=(a, b)`, Redis crashes
    after landing a and comes back after the daemon's tick for landing b."""
    defs = slice_definitions(build_resources(slice_, dataset, holdback=HOLDBACK))
    with dg.instance_for_test() as instance:
        everything = sorted(defs.resolve_asset_graph().get_all_asset_keys())
        initial = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=everything
        )
        assert initial.success
        daemon = InProcessDaemon(defs, instance)
        folder = LandingFolder(slice_.state_dir / "landing")
        stream = ArrivalStream(folder, held_back(dataset, HOLDBACK), BATCHES, label_delay=1)
        result = Replay(slice_, [], {}, [], [])
        landing = 0
        while (landed := stream.land_next(FIRST_LANDING + timedelta(minutes=landing))) is not None:
            if down_between and landing == down_between[0]:
                redis_server.crash()
            tick = daemon.tick()
            # An outage is one line in the catch-up sensor's skip, never a failed tick.
            assert tick.sensor_errors == []
            result.redis_errors += tick.outages
            result.failed_runs += tick.failed_runs()
            if down_between and landing == down_between[0]:
                # The hourly reconciliation comes due while Redis is down.
                result.reconcile_during_outage = defs.resolve_job_def(
                    "reconcile_online_store_job"
                ).execute_in_process(instance=instance, raise_on_error=False)
            if down_between and landing == down_between[1]:
                redis_server.start()
            landing += 1
        # Ticks until two in a row start nothing (the catch-up sensor waits a tick before acting).
        quiet = 0
        for _ in range(8):
            runs = daemon.tick().runs
            result.failed_runs += [source for source, run in runs if not run.success]
            quiet = 0 if runs else quiet + 1
            if quiet == 2:
                break
        assert quiet == 2, "the daemon still finds work after every batch has been handled"

        # Re-running is a no-op: the batches again (as the sensor would run them: nothing materialized,
        # so nothing wakes downstream), and Redis again.
        before = redis_state(slice_)
        names = [path.name for path in sorted(folder.processed.iterdir())]
        config = {"batches": names, "only_news": True}
        rerun = daemon.execute(
            dg.RunRequest(run_config={"ops": {"ingest_arrivals": {"config": config}}}), "arrivals_job"
        )
        assert rerun.success and rerun.get_asset_materialization_events() == []
        assert daemon.execute(dg.RunRequest(asset_selection=[dg.AssetKey("online_store")])).success
        assert redis_state(slice_) == before
        assert daemon.tick().runs == []

        for landed in stream.landed:
            result.message_ids += landed.message_ids
        for message, message_id in zip(
            [m for s in stream.slices for m in s], result.message_ids, strict=True
        ):
            result.texts[message_id] = message.text
    return result


def redis_state(slice_: Services) -> dict[bytes, dict[bytes, bytes]]:
    """Every feature row of a Feast project in Redis, keyed without the project's name.

    The sync's watermark is left out: it says when the rows were computed, which differs between replays.
    """
    client = urls.redis_client(slice_.redis_url)
    suffix = slice_.feast_project.encode()
    state: dict[bytes, dict[bytes, bytes]] = {}
    try:
        for key in client.scan_iter(match=f"*{slice_.feast_project}", count=1000):
            if key == online_sync.watermark_key(slice_.feast_project).encode():
                continue
            name = key.removesuffix(suffix)
            if client.type(key) == b"hash":
                state[name] = cast(dict[bytes, bytes], client.hgetall(key))
            else:
                state[name] = {b"": cast(bytes, client.get(key))}
    finally:
        client.close()
    return state


def table(slice_: Services, query: str) -> pd.DataFrame:
    with connect(slice_.postgres_url) as conn:
        return query_frame(conn, query)


@pytest.fixture(scope="module")
def clean(
    server_urls: tuple[str, str], redis_server: RedisServer, dataset_path: Path, tmp_path_factory
) -> Iterator[Replay]:
    with new_slice(server_urls, tmp_path_factory.mktemp("clean"), redis_url=redis_server.url) as slice_:
        yield replay(slice_, dataset_path, redis_server)


@pytest.fixture(scope="module")
def with_outage(
    server_urls: tuple[str, str], redis_server: RedisServer, dataset_path: Path, tmp_path_factory
) -> Iterator[Replay]:
    with new_slice(server_urls, tmp_path_factory.mktemp("outage"), redis_url=redis_server.url) as slice_:
        yield replay(slice_, dataset_path, redis_server, down_between=(2, BATCHES - 1))


def test_every_new_message_is_served_with_its_features(clean: Replay) -> None:
    assert clean.failed_runs == [] and clean.redis_errors == []
    assert len(clean.message_ids) == HOLDBACK == len(set(clean.message_ids))
    slice_ = clean.slice_
    store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
    served = (
        store.get_online_features(
            features=VIEW_FEATURES,
            entity_rows=[{"message_id": i} for i in clean.message_ids],
        )
        .to_df()
        .set_index("message_id")
    )
    expected = compute_features(pd.Series(clean.texts)).loc[clean.message_ids]
    pd.testing.assert_frame_equal(
        served.loc[clean.message_ids, list(FEATURE_NAMES)], expected, check_names=False, check_dtype=False
    )
    labelled = table(clean.slice_, "SELECT count(*) AS n FROM sms_arrival_labels")["n"][0]
    assert labelled == HOLDBACK  # every label came, a batch after its messages


def test_a_redis_outage_fails_clearly_then_converges_to_the_clean_state(
    clean: Replay, with_outage: Replay
) -> None:
    # While Redis was down: clear errors, and a retried then failed reconciliation.
    url = with_outage.slice_.redis_url
    assert with_outage.redis_errors
    assert all(f"Redis at {url} is unreachable" in error for error in with_outage.redis_errors)
    # The arrivals runs fail at their Redis step (each after storing its batches, which the catch-up
    # sensor then carries to Redis), as do the runs that try again while Redis is down.
    assert with_outage.failed_runs and set(with_outage.failed_runs) <= {
        "arrivals_sensor",
        "sms_automation",
        "feature_store_catch_up",
    }
    reconcile = with_outage.reconcile_during_outage
    assert reconcile is not None and not reconcile.success
    retries = [e for e in reconcile.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 3
    [failure] = [e for e in reconcile.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None and f"Redis at {url} is unreachable" in error.to_string()

    # Afterwards: nothing lost, nothing twice, and Redis exactly as after the clean replay.
    assert with_outage.message_ids == clean.message_ids
    for replayed in (clean, with_outage):
        counts = table(
            replayed.slice_,
            "SELECT (SELECT count(*) FROM sms_arrivals) AS arrivals, "
            "(SELECT count(DISTINCT sms_id) FROM sms_arrivals) AS distinct_ids, "
            "(SELECT count(*) FROM sms_features) AS features, "
            "(SELECT count(*) FROM raw_sms_messages) AS initial",
        ).iloc[0]
        assert counts["arrivals"] == counts["distinct_ids"] == HOLDBACK
        assert counts["features"] == counts["initial"] + HOLDBACK
    outage_state, clean_state = redis_state(with_outage.slice_), redis_state(clean.slice_)
    assert len(outage_state) == 5574  # every message once
    assert outage_state == clean_state
    # The watermark is the last change Postgres made, which Redis has taken in.
    with connect(with_outage.slice_.postgres_url) as conn:
        newest = feature_table.newest_change(conn)
    watermark = online_sync.read_watermark(with_outage.slice_.redis_url, with_outage.slice_.feast_project)
    assert watermark == newest

"""Arrivals through the assets against the real Postgres and Redis: stored once, quarantined whole,
featurized incrementally, labelled late, synced to Redis from a watermark.

The module works in a slice of its own (database, Feast project, landing folder, Dagster instance), on
top of an initial load that holds back the dataset's last 50 messages.
"""

import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.feature_store.assets import OnlineStoreConfig, online_store
from sms_assets.defs.features.assets import sms_features
from sms_assets.defs.ingestion.arrivals import ArrivalsConfig, ingest_arrivals
from sms_assets.defs.ingestion.batches import LABELS_HEADER, MESSAGES_HEADER, message_id_for
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.resources import LandingResource
from sms_assets.defs.training.assets import training_set
from sms_core.features.compute import compute_features
from sms_core.features.schema import FEATURE_NAMES, MAX_TEXT_CHARS
from sms_core.postgres import connect, query_frame
from tests.conftest import ALL_ASSETS, Services, delete_feast_keys, new_slice
from tests.integration.conftest import build_resources

pytestmark = pytest.mark.integration

HOLDBACK = 50


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def slice_(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path_factory.mktemp("arrivals")) as slice_:
        yield slice_


@pytest.fixture(scope="module")
def resources(slice_: Services, dataset_path: Path, instance: dg.DagsterInstance) -> dict[str, Any]:
    resources = build_resources(slice_, dataset_path, holdback=HOLDBACK)
    assert dg.materialize(ALL_ASSETS, resources=resources, instance=instance).success
    return resources


@pytest.fixture
def folder(resources: dict[str, Any]) -> LandingFolder:
    return resources["landing"].folder()


def table(slice_: Services, query: str) -> pd.DataFrame:
    with connect(slice_.postgres_url) as conn:
        return query_frame(conn, query)


def sql_list(ids: Sequence[int]) -> str:
    return f"({', '.join(str(int(i)) for i in ids)})"


def land_messages(folder: LandingFolder, name: str, texts: Sequence[str], at: datetime) -> list[int]:
    rows = [(f"{name}-{i}", at + timedelta(seconds=i), text) for i, text in enumerate(texts)]
    folder.land(f"{name}.tsv", MESSAGES_HEADER, rows)
    return [message_id_for(sms_id) for sms_id, _, _ in rows]


def run(assets: list[Any], resources: dict[str, Any], instance: dg.DagsterInstance, **kwargs: Any):
    return dg.materialize(assets, resources=resources, instance=instance, **kwargs)


def only_news(batches: list[str] | None = None) -> dg.RunConfig:
    """The run config arrivals_sensor sends: materialize an arrivals asset only when it gained rows."""
    return dg.RunConfig(ops={"ingest_arrivals": ArrivalsConfig(batches=batches or [], only_news=True)})


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Metadata of each asset the run materialized, by asset name."""
    return {
        event.materialization.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_initial_load_holds_back_the_tail(resources: dict[str, Any], slice_: Services) -> None:
    raw = table(slice_, "SELECT count(*) AS n, max(message_id) AS last FROM raw_sms_messages")
    assert (raw["n"][0], raw["last"][0]) == (5574 - HOLDBACK, 5574 - HOLDBACK)


def test_a_batch_is_stored_once_however_often_it_lands(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    ids = land_messages(folder, "once", ["first text", "second text"], datetime.now(UTC))
    first = run([ingest_arrivals], resources, instance)
    assert materialized(first)["sms_arrivals"]["rows_added"] == 2
    assert folder.pending() == []
    assert folder.find("once.tsv") == folder.processed / "once.tsv"

    # The same rows landed again under another name, and the first run re-executed, as the sensor runs
    # them: nothing is added, and nothing is materialized, so nothing downstream wakes up.
    (folder.root / "once-again.tsv").write_bytes((folder.processed / "once.tsv").read_bytes())
    again = run([ingest_arrivals], resources, instance, run_config=only_news())
    replay = run([ingest_arrivals], resources, instance, run_config=only_news(["once.tsv"]))
    assert again.success and replay.success
    assert materialized(again) == {} and materialized(replay) == {}
    # A run a person starts materializes both, saying that nothing changed.
    person = materialized(run([ingest_arrivals], resources, instance))
    assert {name: meta["changed"] for name, meta in person.items()} == {
        "sms_arrivals": False,
        "sms_arrival_labels": False,
    }
    stored = table(slice_, f"SELECT message_id FROM sms_arrivals WHERE message_id IN {sql_list(ids)}")
    assert sorted(stored["message_id"]) == sorted(ids)


def test_a_malformed_batch_is_quarantined_whole_and_named(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    now = datetime.now(UTC)
    good = land_messages(folder, "q1-good", ["a fine message"], now)
    folder.land(
        "q2-bad.tsv",
        MESSAGES_HEADER,
        [("q2-bad-0", now, "valid line, but its batch is rejected"), ("q2-bad-1", "not a time", "x")],
    )
    later = land_messages(folder, "q3-good", ["another fine one"], now + timedelta(seconds=5))

    with pytest.raises(
        dg.Failure, match=r"1 batch\(es\) refused.*q2-bad\.tsv:3: 'not a time' is not an ISO 8601"
    ):
        run([ingest_arrivals], resources, instance)
    assert folder.pending() == []
    assert folder.find("q2-bad.tsv") == folder.quarantined / "q2-bad.tsv"
    assert "q2-bad.tsv:3" in folder.quarantine_reason(folder.quarantined / "q2-bad.tsv")
    # The other batches of the same run went through, and were recorded as a materialization.
    stored = table(slice_, "SELECT sms_id FROM sms_arrivals WHERE sms_id LIKE 'q%'")
    assert sorted(stored["sms_id"]) == ["q1-good-0", "q3-good-0"]
    latest = instance.get_latest_materialization_event(dg.AssetKey("sms_arrivals"))
    assert latest and latest.asset_materialization
    assert latest.asset_materialization.metadata["batches"].value == ["q1-good.tsv", "q3-good.tsv"]

    # Batches that land later flow as usual.
    after = land_messages(folder, "q4-good", ["and one more"], now + timedelta(seconds=10))
    assert run([ingest_arrivals], resources, instance).success
    ids = table(slice_, "SELECT message_id FROM sms_arrivals")["message_id"].tolist()
    assert set(good + later + after) <= set(ids)


SECRET = "SECRET-CONTENT"


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Everything the run recorded: its event log (messages, errors, metadata) as stored."""
    return "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))


def test_entries_that_are_no_batch_are_quarantined_unread(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    """Links (out of the folder, to a system-like file, to a folder), a folder, a FIFO, a hard link, a
    file above the size limit and a text above MAX_TEXT_CHARS: each quarantined with its reason,
    nothing of it stored or quoted anywhere; the good batch beside them goes through."""
    elsewhere = slice_.state_dir / "elsewhere"
    elsewhere.mkdir()
    now = datetime.now(UTC).isoformat()
    outside_batch = elsewhere / "batch.tsv"
    outside_batch.write_text(f"sms_id\treceived_at\ttext\nh-out\t{now}\t{SECRET} from outside\n")
    system_file = elsewhere / "passwd"
    system_file.write_text(f"root:{SECRET}:0:0:root:/root:/bin/bash\n")
    root = folder.root
    root.mkdir(exist_ok=True)
    (root / "h1-link-out.tsv").symlink_to(outside_batch)
    (root / "h2-link-system.tsv").symlink_to(system_file)
    (root / "h3-link-folder.tsv").symlink_to(elsewhere, target_is_directory=True)
    (root / "h4-folder.tsv").mkdir()
    os.mkfifo(root / "h5-fifo.tsv")
    os.link(outside_batch, root / "h6-hard-link.tsv")
    big = "".join(f"h-big-{i}\t{now}\t{SECRET} {i}\n" for i in range(2000))
    (root / "h7-big.tsv").write_text(f"sms_id\treceived_at\ttext\n{big}")
    big_size = (root / "h7-big.tsv").stat().st_size
    long_text = f"{SECRET} " * (MAX_TEXT_CHARS // 10)
    (root / "h8-long-text.tsv").write_text(
        f"sms_id\treceived_at\ttext\nh-ok\t{now}\tfine\nh-long\t{now}\t{long_text}\n"
    )
    [good] = land_messages(folder, "h9-good", ["a fine message"], datetime.now(UTC))
    limited = {**resources, "landing": LandingResource(path=str(root), max_bytes=64 * 1024)}

    result = run([ingest_arrivals], limited, instance, raise_on_error=False)

    assert not result.success
    expected = {
        "h1-link-out.tsv": "is a symbolic link, not a regular file",
        "h2-link-system.tsv": "is a symbolic link, not a regular file",
        "h3-link-folder.tsv": "is a symbolic link, not a regular file",
        "h4-folder.tsv": "is a folder, not a regular file",
        "h5-fifo.tsv": "is a FIFO (named pipe), not a regular file",
        "h6-hard-link.tsv": "has 2 names (hard links); a batch is a file of its own",
        "h7-big.tsv": f"is {big_size:,} bytes, above the limit of 65,536 bytes",
        "h8-long-text.tsv": (
            f":3: text of {len(long_text):,} characters, above the limit of 2,000 (MAX_TEXT_CHARS)"
        ),
    }
    assert folder.pending() == []
    quarantined = folder.quarantined.glob("h*.tsv")
    assert sorted(p.name for p in quarantined) == sorted(expected)
    for name, reason in expected.items():
        assert reason in folder.quarantine_reason(folder.quarantined / name), name
    # Links were moved themselves; what they named is where it was, unchanged.
    assert (folder.quarantined / "h1-link-out.tsv").readlink() == outside_batch
    assert SECRET in outside_batch.read_text() and SECRET in system_file.read_text()
    # Nothing of a refused entry was stored; the good batch was.
    stored = table(slice_, "SELECT message_id, sms_id FROM sms_arrivals WHERE sms_id LIKE 'h%'")
    assert stored["sms_id"].tolist() == ["h9-good-0"] and stored["message_id"].tolist() == [good]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = str(failure.step_failure_data.error)
    assert all(name in description for name in expected)
    # Not one byte of the refused files in the reasons, the failure, the logs or the metadata.
    reasons = "".join(p.read_text() for p in folder.quarantined.glob("h*.error"))
    assert SECRET not in reasons
    assert SECRET not in run_log(instance, result)


@pytest.mark.parametrize(
    "name",
    ["../outside.tsv", "processed/../../outside.tsv", "/{state}/outside.tsv", ".hidden.tsv", "x\x00.tsv"],
)
def test_run_config_names_out_of_the_folder_are_refused(
    resources: dict[str, Any],
    folder: LandingFolder,
    slice_: Services,
    instance: dg.DagsterInstance,
    name: str,
) -> None:
    outside = slice_.state_dir / "outside.tsv"
    content = f"sms_id\treceived_at\ttext\ncfg-0\t{datetime.now(UTC).isoformat()}\t{SECRET}\n"
    outside.write_text(content)
    name = name.replace("/{state}", str(slice_.state_dir))
    folder.land("cfg-waiting.tsv", MESSAGES_HEADER, [("cfg-1", datetime.now(UTC), "waits")])
    with pytest.raises(dg.Failure, match=rf"^batch name {re.escape(repr(name))} (holds|starts)"):
        run([ingest_arrivals], resources, instance, run_config=only_news([name, "cfg-waiting.tsv"]))
    # Refused before anything was read or moved.
    assert outside.read_text() == content
    assert [p.name for p in folder.pending()] == ["cfg-waiting.tsv"]
    assert table(slice_, "SELECT sms_id FROM sms_arrivals WHERE sms_id LIKE 'cfg-%'").empty
    (folder.root / "cfg-waiting.tsv").unlink()


def test_features_are_computed_for_new_messages_only(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    run([sms_features], resources, instance)  # whatever earlier tests landed
    texts = ["WINNER!! Claim 1000 now", "ok see u at 5", "Call 09061701461 FREE"]
    ids = land_messages(folder, "feat", texts, datetime.now(UTC))
    run([ingest_arrivals], resources, instance)

    result = materialized(run([sms_features], resources, instance))["sms_features"]
    assert (result["rows_added"], result["rows_removed"]) == (3, 0)
    assert result["dagster/row_count"] == len(table(slice_, "SELECT message_id FROM sms_features"))
    rows = table(slice_, f"SELECT * FROM sms_features WHERE message_id IN {sql_list(ids)}")
    expected = compute_features(pd.Series(texts, index=ids))
    pd.testing.assert_frame_equal(
        rows.set_index("message_id").loc[ids, list(FEATURE_NAMES)], expected, check_names=False
    )

    before = table(slice_, "SELECT * FROM sms_features ORDER BY message_id")
    again = materialized(run([sms_features], resources, instance))["sms_features"]
    assert (again["rows_added"], again["rows_removed"]) == (0, 0)
    pd.testing.assert_frame_equal(table(slice_, "SELECT * FROM sms_features ORDER BY message_id"), before)


def test_late_labels_join_the_training_set_at_the_message_time(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    sent = datetime.now(UTC) - timedelta(hours=3)
    [spam, ham, unlabelled] = land_messages(folder, "late", ["Txt WIN to 80086", "on my way", "hm"], sent)
    run([ingest_arrivals], resources, instance)
    run([sms_features], resources, instance)

    def training_rows() -> pd.DataFrame:
        run([training_set], resources, instance)
        return table(
            slice_, f"SELECT * FROM sms_training_set WHERE message_id IN {sql_list([spam, ham, unlabelled])}"
        )

    assert training_rows().empty  # no label yet: not a training example

    labelled_at = sent + timedelta(hours=2)
    folder.land(
        "late-labels.tsv", LABELS_HEADER, [("late-0", labelled_at, "ham"), ("late-1", labelled_at, "ham")]
    )
    labels = materialized(run([ingest_arrivals], resources, instance))["sms_arrival_labels"]
    assert labels["rows_added"] == 2
    rows = training_rows().set_index("message_id")
    assert sorted(rows.index) == sorted([spam, ham])
    # The features are joined as of the message's arrival, not the label's.
    assert rows.loc[spam, "event_timestamp"] == sent
    assert rows.loc[spam, "text_length"] == len("Txt WIN to 80086")

    # A corrected label (later labelled_at) replaces the first; the same correction again changes nothing.
    correction = [("late-0", labelled_at + timedelta(minutes=5), "spam")]
    folder.land("late-fix.tsv", LABELS_HEADER, correction)
    assert materialized(run([ingest_arrivals], resources, instance))["sms_arrival_labels"]["rows_added"] == 1
    folder.land("late-fix-again.tsv", LABELS_HEADER, correction)
    assert materialized(run([ingest_arrivals], resources, instance, run_config=only_news())) == {}
    assert training_rows().set_index("message_id").loc[spam, "label"] == "spam"


def online(resources: dict[str, Any], ids: Sequence[int]) -> pd.DataFrame:
    store = resources["feast"].store()
    return (
        store.get_online_features(
            features=store.get_feature_service("sms_service"),
            entity_rows=[{"message_id": i} for i in ids],
        )
        .to_df()
        .set_index("message_id")
    )


def test_online_store_syncs_from_the_watermark(
    resources: dict[str, Any], folder: LandingFolder, slice_: Services, instance: dg.DagsterInstance
) -> None:
    redis_url, project = slice_.redis_url, slice_.feast_project
    run([ingest_arrivals], resources, instance)
    run([sms_features], resources, instance)
    run([online_store], resources, instance)
    watermark = online_sync.read_watermark(redis_url, project)
    assert watermark is not None

    now = datetime.now(UTC)
    ids = land_messages(folder, "sync", ["fresh one", "FRESH TWO!"], now)
    run([ingest_arrivals], resources, instance)
    run([sms_features], resources, instance)
    meta = materialized(run([online_store], resources, instance))["online_store"]
    # Only the rows written since the watermark: the two new messages.
    assert (meta["full_refresh"], meta["rows_written"]) == (False, 2)
    assert datetime.fromisoformat(meta["watermark_before"]) == watermark
    newest = table(slice_, "SELECT max(computed_at) AS t FROM sms_features")["t"][0]
    assert datetime.fromisoformat(meta["watermark"]) == newest > watermark
    served = online(resources, ids)
    assert served.loc[ids[1], "uppercase_ratio"] == 1.0
    assert served.loc[ids[0], "word_count"] == 2

    # A late row: its event time is older than everything Redis holds, yet it is written, because the
    # sync follows when rows were computed, not their event time.
    [late] = land_messages(folder, "sync-late", ["late by a whole day"], now - timedelta(days=1))
    run([ingest_arrivals], resources, instance)
    run([sms_features], resources, instance)
    again = materialized(run([online_store], resources, instance))["online_store"]
    assert again["rows_written"] == 1 and again["watermark"] > meta["watermark"]
    assert online(resources, [late]).loc[late, "word_count"] == 5
    # Nothing new: nothing written, and the watermark stays.
    idle = materialized(run([online_store], resources, instance))["online_store"]
    assert (idle["rows_written"], idle["watermark"], idle["changed"]) == (0, again["watermark"], False)


def test_a_redis_that_lost_its_data_is_refilled_whole(
    resources: dict[str, Any], slice_: Services, instance: dg.DagsterInstance
) -> None:
    run([sms_features], resources, instance)
    count = len(table(slice_, "SELECT message_id FROM sms_features"))
    delete_feast_keys(slice_.redis_url, slice_.feast_project)  # the watermark goes with the rows
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) is None
    meta = materialized(run([online_store], resources, instance))["online_store"]
    assert (meta["full_refresh"], meta["rows_written"]) == (True, count)
    sample = table(slice_, "SELECT message_id FROM sms_features ORDER BY random() LIMIT 50")["message_id"]
    assert bool(online(resources, sample.tolist())["text_length"].notna().all())


def test_full_refresh_ignores_the_watermark(
    resources: dict[str, Any], slice_: Services, instance: dg.DagsterInstance
) -> None:
    config = dg.RunConfig(ops={"online_store": OnlineStoreConfig(full_refresh=True)})
    meta = materialized(run([online_store], resources, instance, run_config=config))["online_store"]
    count = len(table(slice_, "SELECT message_id FROM sms_features"))
    assert (meta["full_refresh"], meta["rows_written"]) == (True, count)
    assert meta["watermark"] == meta["watermark_before"]

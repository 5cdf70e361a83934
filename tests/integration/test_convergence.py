"""Every run brings Postgres, Redis and the served model in line with the inputs, or fails loudly.

One slice of the servers for the module, one Dagster instance across its runs (as a user's would be), and
a dataset file of its own that each test edits the way a user would, then runs the graph (the whole
selection or part of it) and checks the tables, Redis and the prediction path the API uses.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from sms_assets.defs.feature_store import checks as feature_store_checks
from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.feature_store.assets import OnlineStoreConfig
from sms_assets.defs.features import table as feature_table
from sms_assets.defs.features.assets import FeaturesConfig
from sms_assets.defs.features.table import FEATURE_CODE_VERSION, STAGING_PREFIX
from sms_assets.defs.resources import project_resources
from sms_assets.defs.training.assets import TrainingConfig
from sms_core import online_keys, prediction, settings, urls
from sms_core.contracts import VIEW_FEATURES
from sms_core.features.compute import compute_features
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import connect, query_frame
from sms_core.tables import table_note
from tests.conftest import ALL_ASSETS, Services, new_slice

pytestmark = pytest.mark.integration

ALL_ASSET_KEYS = {key for a in ALL_ASSETS if isinstance(a, dg.AssetsDefinition) for key in a.keys}


# Hyper-parameters whose model meets the gate before and after these tests' edits: with the defaults, the
# model retrained without the last 574 messages blocks 0.69% of ham where the served one blocks 0.20%,
# which the gate rightly refuses (docs/model.md); these tests are about the data converging.
STABLE_MODEL = TrainingConfig(sgd_alpha=2e-4, ham_weight=3.0)


def converged(result: dg.ExecuteInProcessResult) -> bool:
    """Every step of the run succeeded, but for the model gate, which may refuse the model retrained on
    the edited data (a retrain without 50 messages blocks 0.50% of ham where the served model blocks
    0.20%): the served model then stays, and that is the gate's test, not this module's."""
    failed = {event.step_key for event in result.all_events if event.is_step_failure}
    return result.success or failed == {"spam_model_model_beats_floor_and_served"}


class Graph:
    """The project's graph on one slice and one instance, run as a user runs it."""

    def __init__(self, slice_: Services, dataset: Path):
        self.slice = slice_
        self.dataset = dataset
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources: dict[str, Any] = project_resources(
            settings.load({**slice_.env(), settings.DATASET_ENV: str(dataset)})
        )

    def run(
        self,
        selection: dg.AssetSelection | None = None,
        online_store: OnlineStoreConfig | None = None,
        features: FeaturesConfig | None = None,
        model: TrainingConfig = STABLE_MODEL,
    ) -> dg.ExecuteInProcessResult:
        """The selection (default: everything), with `online_store`'s config (a full refresh, a piece
        size), `sms_features`' (a piece size) and `spam_model`'s when given."""
        trains = dg.AssetKey("spam_model") in (selection or dg.AssetSelection.all()).resolve(ALL_ASSETS)
        ops = {
            "online_store": online_store,
            "sms_features": features,
            "spam_model": model if trains else None,
        }
        config = dg.RunConfig(ops={name: c for name, c in ops.items() if c is not None})
        return dg.materialize(
            ALL_ASSETS,
            resources=self.resources,
            instance=self.instance,
            selection=selection,
            raise_on_error=False,
            run_config=config,
        )

    def lines(self) -> list[str]:
        return self.dataset.read_text(encoding="utf-8").splitlines()

    def write(self, lines: list[str]) -> None:
        self.dataset.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def query(self, sql: str) -> Any:
        with connect(self.slice.postgres_url) as conn:
            return query_frame(conn, sql)

    def online(self, message_ids: list[int]) -> dict[str, list]:
        return prediction.online_features(self.resources["feast"].store(), message_ids, VIEW_FEATURES)

    def online_ids(self) -> set[int]:
        return set(online_keys.online_ids(self.slice.redis_url, self.slice.feast_project).tolist())


@contextmanager
def graph_run_once(server_urls: tuple[str, str], dataset_path: Path, folder: Path) -> Iterator[Graph]:
    """A Graph on a new slice and a copy of the dataset of its own in `folder`, run once in full."""
    dataset = folder / "SMSSpamCollection"
    shutil.copyfile(dataset_path, dataset)
    with new_slice(server_urls, folder / "state") as slice_:
        graph = Graph(slice_, dataset)
        assert graph.run().success
        yield graph


@pytest.fixture(scope="module")
def graph(
    server_urls: tuple[str, str], dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Graph]:
    with graph_run_once(server_urls, dataset_path, tmp_path_factory.mktemp("convergence")) as graph:
        yield graph


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Each asset the run materialized, with its metadata values."""
    assets = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        assets[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return assets


def check_passed(result: dg.ExecuteInProcessResult, name: str) -> tuple[bool, dict[str, Any]]:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def data_versions(graph: Graph) -> dict[str, str | None]:
    """The data version each asset's latest materialization reported (the fingerprint of what it holds)."""
    found = {}
    for key in ALL_ASSET_KEYS:
        event = graph.instance.get_latest_materialization_event(key)
        tags = event.asset_materialization.tags if event and event.asset_materialization else {}
        found[key.to_user_string()] = (tags or {}).get("dagster/data_version")
    return found


# Assets whose data version is the fingerprint of their content (the arrival tables get Dagster's own).
VERSIONED = {
    "raw_sms_messages",
    "sms_features",
    "feast_registry",
    "training_set",
    "online_store",
    "spam_model",
    "served_model",
}


def test_a_run_with_unchanged_inputs_runs_every_step_and_says_nothing_changed(graph: Graph) -> None:
    before = data_versions(graph)
    result = graph.run()
    assert result.success
    assets = materialized(result)
    assert set(assets) == {key.to_user_string() for key in ALL_ASSET_KEYS}
    assert not [e for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert {name: values["changed"] for name, values in assets.items()} == dict.fromkeys(assets, False)
    # The UI says the same: every data version is the one the previous run reported.
    after = data_versions(graph)
    assert all(after[name] for name in VERSIONED)
    assert {name: after[name] for name in VERSIONED} == {name: before[name] for name in VERSIONED}


def test_with_the_raw_table_as_it_was_a_run_computes_only_arrivals_and_compare_all_repairs_the_rest(
    graph: Graph,
) -> None:
    features = dg.AssetSelection.assets("sms_features")
    messages = int(graph.query("SELECT count(*) AS n FROM sms_features")["n"][0])
    # A row lost outside the pipeline: only arrivals can be new while the raw table is as it was.
    with connect(graph.slice.postgres_url) as conn:
        conn.execute("DELETE FROM sms_features WHERE message_id = 7")
    result = graph.run(features)
    meta = materialized(result)["sms_features"]
    assert meta["compared"].startswith("new arrivals only"), meta["compared"]
    assert (meta["rows_added"], meta["rows_updated"], meta["rows_removed"]) == (0, 0, 0)
    # The count is the noted one, carried forward: a change made outside the pipeline is not seen.
    assert meta["dagster/row_count"] == messages
    assert graph.query("SELECT count(*) AS n FROM sms_features WHERE message_id = 7")["n"][0] == 0

    result = graph.run(features, features=FeaturesConfig(compare_all=True))
    meta = materialized(result)["sms_features"]
    assert meta["compared"] == "every message: asked for (compare_all)"
    assert (meta["rows_added"], meta["rows_updated"], meta["rows_removed"]) == (1, 0, 0)
    assert meta["dagster/row_count"] == messages
    row = graph.query("SELECT * FROM sms_features WHERE message_id = 7").iloc[0]
    text = graph.query("SELECT text FROM raw_sms_messages WHERE message_id = 7")["text"]
    expected = compute_features(text).iloc[0]
    assert {name: row[name] for name in FEATURE_NAMES} == {name: expected[name] for name in FEATURE_NAMES}
    # The totals in the note, counted again after the full comparison, are the table's.
    with connect(graph.slice.postgres_url) as conn:
        assert feature_table.Totals.noted(table_note(conn, "sms_features")) == feature_table.Totals.read(conn)
    assert graph.run().success  # Redis takes the row again


def test_an_edited_text_recomputes_its_features_in_postgres_and_redis(graph: Graph) -> None:
    before = data_versions(graph)
    lines = graph.lines()
    label, _ = lines[41].split("\t")
    lines[41] = f"{label}\tWINNER!! Call 09061701461 now to claim 1000 FREE prizes!!!"
    graph.write(lines)
    result = graph.run(dg.AssetSelection.assets("raw_sms_messages").downstream())
    assert result.success, check_passed(result, "model_beats_floor_and_served")
    assets = materialized(result)
    assert assets["sms_features"]["rows_updated"] == 1
    assert assets["online_store"]["rows_written"] == 1
    row = graph.query("SELECT * FROM sms_features WHERE message_id = 42").iloc[0]
    assert (row["exclamation_count"], row["digit_count"]) == (5, 15)
    online = graph.online([42])
    assert {name: online[name][0] for name in FEATURE_NAMES} == {name: row[name] for name in FEATURE_NAMES}
    after = data_versions(graph)
    changed = {name for name in VERSIONED if after[name] != before[name]}
    assert {"raw_sms_messages", "sms_features", "online_store", "training_set"} <= changed
    assert "feast_registry" not in changed  # the feature repo is as it was


def test_a_relabelled_message_reaches_the_training_set(graph: Graph) -> None:
    lines = graph.lines()
    label, text = lines[6].split("\t")
    flipped = "spam" if label == "ham" else "ham"
    lines[6] = f"{flipped}\t{text}"
    graph.write(lines)
    result = graph.run()
    assert result.success
    assert materialized(result)["training_set"]["changed"] is True
    assert graph.query("SELECT label FROM sms_training_set WHERE message_id = 7")["label"].iloc[0] == flipped


def test_removed_messages_leave_the_tables_and_redis_and_are_unknown_to_the_api(graph: Graph) -> None:
    graph.write(graph.lines()[:5000])
    result = graph.run()
    assert result.success
    assets = materialized(result)
    assert assets["sms_features"]["rows_removed"] == 574
    assert assets["online_store"]["entities_removed"] == 574
    counts = graph.query(
        "SELECT (SELECT count(*) FROM sms_features) AS f, (SELECT count(*) FROM sms_training_set) AS t"
    )
    assert (int(counts["f"].iloc[0]), int(counts["t"].iloc[0])) == (5000, 5000)
    assert graph.online_ids() == set(range(1, 5001))
    passed, checked = check_passed(result, "online_matches_offline")
    assert passed and (checked["online_messages"], checked["offline_messages"]) == (5000, 5000)
    with pytest.raises(prediction.UnknownMessageError):
        graph.online([5500])


def test_an_entity_only_redis_holds_fails_the_check_and_blocks_promotion(graph: Graph) -> None:
    store = graph.resources["feast"].store()
    served_before = graph.resources["model_store"].model_store().served_version()
    stray = graph.online([1])  # a real row's values, under an id the offline table does not have
    frame = {name: stray[name] for name in FEATURE_NAMES}
    store.write_to_online_store(
        "sms_base_features",
        df=pd.DataFrame(
            {"message_id": [987_654_321], "event_timestamp": [pd.Timestamp("2024-01-01", tz="UTC")], **frame}
        ),
    )
    result = graph.run(dg.AssetSelection.assets("online_store", "served_model"))
    passed, checked = check_passed(result, "online_matches_offline")
    assert not passed
    assert (checked["online_not_offline"], checked["first_online_not_offline_ids"]) == (1, [987_654_321])
    assert not result.success or "served_model" not in materialized(result)
    assert graph.resources["model_store"].model_store().served_version() == served_before
    # A later run of served_model alone still refuses: the latest verdict on Redis is a failure.
    alone = graph.run(dg.AssetSelection.assets("served_model"))
    assert not alone.success
    failure = alone.get_step_failure_events()[0].event_specific_data.error.message  # type: ignore[union-attr]
    assert "online_matches_offline (on online_store) failed" in failure
    # The hourly reconciliation removes it; then the check passes and promotion is allowed again.
    online_keys.delete(graph.slice.redis_url, graph.slice.feast_project, [987_654_321])
    assert graph.run(dg.AssetSelection.assets("online_store", "served_model")).success


def test_a_feature_row_that_differs_from_request_time_blocks_training_and_promotion(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    served_before = graph.resources["model_store"].model_store().served_version()
    with connect(graph.slice.postgres_url) as conn:
        conn.execute("UPDATE sms_features SET word_count = word_count + 1 WHERE message_id IN (3, 4000)")
        [(messages,)] = conn.execute("SELECT count(*) FROM sms_features").fetchall()
    # The check reads the table in chunks: the two rows fall in different ones. Message 1164 has the
    # text of message 3 and its own, untouched row: only message 3 is counted.
    monkeypatch.setattr(feature_store_checks, "CHECK_CHUNK", 2_000)
    result = graph.run(dg.AssetSelection.assets("feast_registry").downstream())
    passed, checked = check_passed(result, "request_features_match_batch")
    assert not passed and checked["first_mismatched_ids"] == [3, 4000]
    assert (checked["mismatched"], checked["messages_compared"]) == (2, messages)
    assets = materialized(result)
    assert "training_set" not in assets and "online_store" not in assets and "served_model" not in assets
    assert graph.resources["model_store"].model_store().served_version() == served_before
    # sms_features puts the row right (its text still matches, so a full rebuild is what a user runs
    # after a manual edit: here the row is restored by hand), and the next run promotes again.
    with connect(graph.slice.postgres_url) as conn:
        conn.execute("UPDATE sms_features SET word_count = word_count - 1 WHERE message_id IN (3, 4000)")
    assert graph.run().success


def edit_texts(graph: Graph, message_ids: list[int], text: str) -> None:
    lines = graph.lines()
    for message_id in message_ids:
        label, _ = lines[message_id - 1].split("\t")
        lines[message_id - 1] = f"{label}\t{text} ({message_id})"
    graph.write(lines)


def assert_redis_equals_postgres(graph: Graph, message_ids: list[int]) -> None:
    offline = graph.query("SELECT * FROM sms_features ORDER BY message_id").set_index("message_id")
    assert graph.online_ids() == set(offline.index)
    online = graph.online(message_ids)
    for name in FEATURE_NAMES:
        assert online[name] == offline.loc[message_ids, name].tolist(), name


def test_a_sync_in_pieces_carries_edits_and_removals_to_redis(graph: Graph) -> None:
    edited = [10, 3000, 4900]
    edit_texts(graph, edited, "Piece by piece!! 12345")
    graph.write(graph.lines()[:4950])  # ids 4951-5000 go
    result = graph.run(
        dg.AssetSelection.assets("raw_sms_messages").downstream(), OnlineStoreConfig(piece_rows=1)
    )
    assert converged(result)
    meta = materialized(result)["online_store"]
    # One step per changed row: three pieces, the removals done once all three were written.
    assert (meta["pieces"], meta["rows_written"], meta["entities_removed"]) == (3, 3, 50)
    assert 1 <= meta["pieces_at_once"] <= 3
    writes = [
        e for e in result.all_events if e.is_step_success and "write_online_piece" in (e.step_key or "")
    ]
    assert len(writes) == 3
    assert_redis_equals_postgres(graph, edited)
    assert graph.online(edited)["digit_count"] == [7, 9, 9]
    assert check_passed(result, "online_matches_offline")[0]

    # A full refresh in pieces of 1,000 rows: every row written again, in five pieces.
    full = OnlineStoreConfig(full_refresh=True, piece_rows=1_000)
    result = graph.run(dg.AssetSelection.assets("online_store"), full)
    assert result.success
    meta = materialized(result)["online_store"]
    assert (meta["pieces"], meta["rows_written"], meta["full_refresh"]) == (5, 4950, True)
    assert_redis_equals_postgres(graph, [1, 999, 1000, 1001, 4950])


def test_a_failed_piece_leaves_the_watermark_and_the_next_sync_writes_every_change_again(
    graph: Graph,
) -> None:
    redis_url, project = graph.slice.redis_url, graph.slice.feast_project
    watermark = online_sync.read_watermark(redis_url, project)
    edited = [11, 3001, 4901]
    edit_texts(graph, edited, "Second edit, 9 pieces")
    assert graph.run(dg.AssetSelection.assets("raw_sms_messages", "sms_features")).success
    # A key Feast cannot write a hash to: Redis refuses the middle piece's HSET (WRONGTYPE).
    client = urls.redis_client(redis_url)
    try:
        client.set(online_keys.entity_key(project, 3001), b"not a hash")
        failed = graph.run(dg.AssetSelection.assets("online_store"), OnlineStoreConfig(piece_rows=1))
        assert not failed.success
        [failure] = [e for e in failed.get_step_failure_events() if "3001" in (e.step_key or "")]
        # Failed at once, naming Redis's answer: a refusal is not an outage to retry.
        assert "WRONGTYPE" in failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
        assert not [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert "online_store" not in materialized(failed)
        assert online_sync.read_watermark(redis_url, project) == watermark
        client.delete(online_keys.entity_key(project, 3001))
    finally:
        client.close()

    result = graph.run(dg.AssetSelection.assets("online_store"), OnlineStoreConfig(piece_rows=1))
    assert result.success
    meta = materialized(result)["online_store"]
    # Every change since the watermark, the pieces that had succeeded too.
    assert (meta["pieces"], meta["rows_written"]) == (3, 3)
    assert datetime.fromisoformat(meta["watermark_before"]) == watermark
    assert datetime.fromisoformat(meta["watermark"]) > watermark  # type: ignore[operator]
    assert_redis_equals_postgres(graph, edited)
    assert check_passed(result, "online_matches_offline")[0]


def recompute_tables(graph: Graph) -> list[str]:
    tables = graph.query(f"SELECT tablename FROM pg_tables WHERE starts_with(tablename, '{STAGING_PREFIX}')")
    return tables["tablename"].tolist()


def test_changed_feature_code_recomputes_every_row_in_pieces_and_only_a_complete_table_is_swapped_in(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a deploy of other feature code finds: the table recorded under another code version. And a
    # table an earlier, failed recompute left behind.
    abandoned = f"{STAGING_PREFIX}00000000_0000_0000_0000_000000000000"
    with connect(graph.slice.postgres_url) as conn:
        conn.execute("""COMMENT ON TABLE sms_features IS '{"code_version": "older"}'""")
        conn.execute(f"CREATE TABLE {abandoned} (message_id bigint)")
    before = graph.query("SELECT * FROM sms_features ORDER BY message_id")
    messages = len(before)
    edit_texts(graph, [12], "Recomputed in pieces!! 42")

    # A piece that fails (here its texts cannot be computed) leaves the old table as it was.
    def poisoned(text: pd.Series) -> pd.DataFrame:
        if text.str.contains("Recomputed in pieces").any():
            raise ValueError("a text the feature code cannot take")
        return compute_features(text)

    with monkeypatch.context() as patch:
        patch.setattr(feature_table, "compute_features", poisoned)
        failed = graph.run(features=FeaturesConfig(piece_rows=2_000))
    assert not failed.success
    [failure] = failed.get_step_failure_events()
    assert (failure.step_key or "").startswith("sms_features.compute_feature_piece[ids_1_")  # message 12's
    assert "sms_features" not in materialized(failed)
    pd.testing.assert_frame_equal(graph.query("SELECT * FROM sms_features ORDER BY message_id"), before)
    with connect(graph.slice.postgres_url) as conn:
        assert table_note(conn, "sms_features")["code_version"] == "older"
    assert len(recompute_tables(graph)) == 1  # the failed run's; the abandoned one was dropped

    result = graph.run(features=FeaturesConfig(piece_rows=2_000))
    assert converged(result)
    meta = materialized(result)["sms_features"]
    assert meta["full_rebuild"] == f"the feature code changed (code version older -> {FEATURE_CODE_VERSION})"
    pieces = -(-messages // 2_000)
    assert (meta["pieces"], meta["rows_added"], meta["dagster/row_count"]) == (pieces, messages, messages)
    assert 1 <= meta["pieces_at_once"] <= pieces
    computed = [
        e for e in result.all_events if e.is_step_success and "compute_feature_piece" in (e.step_key or "")
    ]
    assert len(computed) == pieces
    assert recompute_tables(graph) == []

    table = graph.query("SELECT * FROM sms_features ORDER BY message_id").set_index("message_id")
    raw = graph.query("SELECT message_id, text FROM raw_sms_messages ORDER BY message_id").set_index(
        "message_id"
    )
    pd.testing.assert_frame_equal(
        table[list(FEATURE_NAMES)], compute_features(raw["text"]), check_names=False
    )
    # One clock reading for every row, after every earlier one: the online sync takes all of them.
    assert table["computed_at"].nunique() == 1
    assert table["computed_at"].iloc[0] > before["computed_at"].max()
    with connect(graph.slice.postgres_url) as conn:
        assert table_note(conn, "sms_features")["code_version"] == FEATURE_CODE_VERSION
    assert materialized(result)["online_store"]["rows_written"] == messages
    assert_redis_equals_postgres(graph, [1, 12, int(table.index[-1])])
    assert graph.online([12])["message_text"] == ["Recomputed in pieces!! 42 (12)"]
    checks = ["request_features_match_batch", "online_matches_offline"]
    if "served_model" in materialized(result):  # the gate may have kept the served model
        checks.append("served_predictions_match_offline")
    for check in checks:
        assert check_passed(result, check)[0], check

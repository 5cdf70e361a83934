"""An incremental check verifies the changed rows and a seeded sample of the others, and fails on a bad
row of either; the nightly full pass catches a bad row that no sample drew."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sms_assets.defs.check_passes import VERIFIED_THROUGH, Pass
from sms_assets.defs.feature_store import checks as feature_store_checks
from sms_assets.defs.feature_store.checks import online_matches_offline, request_features_match_batch
from sms_core.postgres import connect
from tests.conftest import ALL_ASSETS, Services, new_slice
from tests.integration.conftest import build_resources, check_evaluation

pytestmark = pytest.mark.integration

SEED, SAMPLE = 7, 50
CHECKS = {
    "online_matches_offline": online_matches_offline,
    "request_features_match_batch": request_features_match_batch,
}


def pass_config(**config: Any) -> dict[str, Any]:
    """Incremental on the small table: the threshold below which every pass is full set to nothing."""
    values = {"full_below_rows": 0, "sample_seed": SEED, "sample_size": SAMPLE, **config}
    return {"ops": {check.node_def.name: {"config": values} for check in CHECKS.values()}}


class Graph:
    def __init__(self, slice_: Services, resources: dict[str, Any], instance: dg.DagsterInstance):
        self.slice, self.resources, self.instance = slice_, resources, instance

    def checks(self, **config: Any) -> dg.ExecuteInProcessResult:
        """The two checks alone, on what the stores hold now, on the same instance (their history)."""
        return dg.materialize(
            ALL_ASSETS,
            selection=dg.AssetSelection.checks(*CHECKS.values()),
            resources=self.resources,
            instance=self.instance,
            run_config=pass_config(**config),
            raise_on_error=False,  # a failed check is what some of these runs are for
        )

    def corrupt(self, message_id: int, changed: bool = False, by: int = 100) -> None:
        """A wrong offline value for one message (`by` added to a count): stamped as a change, or left
        looking unchanged."""
        stamp = ", computed_at = clock_timestamp()" if changed else ""
        with connect(self.slice.postgres_url) as conn:
            conn.execute(
                f"UPDATE sms_features SET digit_count = digit_count + %s{stamp} WHERE message_id = %s",  # type: ignore[arg-type]
                (by, message_id),
            )

    def next_sample(self) -> list[int]:
        """The rows the next incremental pass samples: drawn with its seed from the rows up to the last
        passing pass's `verified_through` (a passing run of the checks now records it)."""
        passing = verdicts(self.checks())
        assert all(passed for passed, _ in passing.values()), passing
        since = datetime.fromisoformat(passing["online_matches_offline"][1][VERIFIED_THROUGH])
        with connect(self.slice.postgres_url) as conn:
            return [int(i) for i in Pass(since, None, SEED, SAMPLE, "").sample_ids(conn)]


@pytest.fixture
def graph(server_urls: tuple[str, str], dataset_path: Path, tmp_path: Path) -> Iterator[Graph]:
    with new_slice(server_urls, tmp_path / "state") as slice_, dg.DagsterInstance.ephemeral() as instance:
        resources = build_resources(slice_, dataset_path)
        first = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, run_config=pass_config())
        assert first.success
        for name in CHECKS:
            passed, meta = check_evaluation(first, name)
            assert passed and meta["pass"] == "full: no passing evaluation on record", meta
        yield Graph(slice_, resources, instance)


def verdicts(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, dict[str, Any]]]:
    return {name: check_evaluation(result, name) for name in CHECKS}


def test_an_incremental_pass_fails_on_a_bad_changed_row_and_on_a_bad_sampled_one(graph: Graph) -> None:
    for passed, meta in verdicts(graph.checks()).values():
        assert passed and meta["pass"].startswith("incremental: the rows changed since"), meta
        assert (meta["changed_rows_verified"], meta["sampled_rows_verified"]) == (0, SAMPLE), meta
        assert (meta["sample_seed"], meta["sample_size"]) == (SEED, SAMPLE)

    # A changed row, whichever rows the sample draws: verified in full.
    changed = next(i for i in range(1, 6000) if i not in graph.next_sample())
    graph.corrupt(changed, changed=True)
    for name, (passed, meta) in verdicts(graph.checks()).items():
        assert not passed, (name, meta)
        assert meta["changed_rows_verified"] == 1 and meta["first_mismatched_ids"] == [changed], (name, meta)
    graph.corrupt(changed, by=-100)

    # An unchanged row that the seeded sample draws: the same seed draws the same rows.
    sampled = graph.next_sample()[0]
    graph.corrupt(sampled)
    for name, (passed, meta) in verdicts(graph.checks()).items():
        assert not passed and meta["first_mismatched_ids"] == [sampled], (name, meta)
        assert (meta["changed_rows_verified"], meta["sampled_rows_verified"]) == (0, SAMPLE), (name, meta)


def test_the_full_pass_catches_a_bad_row_that_no_sample_drew(graph: Graph) -> None:
    outside = next(i for i in range(1, 6000) if i not in graph.next_sample())
    graph.corrupt(outside)
    # The incremental pass does not draw it, and says what it verified.
    for passed, meta in verdicts(graph.checks()).values():
        assert passed and meta["pass"].startswith("incremental"), meta
    for name, (passed, meta) in verdicts(graph.checks(full=True)).items():
        assert not passed, (name, meta)
        assert meta["pass"] == "full: asked for (the nightly full_checks_job)", meta
        assert meta["first_mismatched_ids"] == [outside], (name, meta)


def test_a_full_pass_shared_by_two_processes_finds_what_one_process_finds(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feature_store_checks, "CHECK_CHUNK", 1_000)  # six chunks, in two processes
    bad = [17, 4_321]
    for message_id in bad:
        graph.corrupt(message_id)
    alone = verdicts(graph.checks(full=True))
    shared = verdicts(graph.checks(full=True, processes=2, pool_from_rows=0))
    counted = (
        "rows_compared",
        "messages_compared",
        "distinct_pairs_computed",
        "mismatched",
        "max_difference",
    )
    for name in CHECKS:
        (passed_alone, one), (passed_shared, two) = alone[name], shared[name]
        assert not passed_alone and not passed_shared, name
        assert (one["processes"], two["processes"]) == (1, 2), name
        assert one["first_mismatched_ids"] == two["first_mismatched_ids"] == bad, (name, one, two)
        assert {key: one.get(key) for key in counted} == {key: two.get(key) for key in counted}, name

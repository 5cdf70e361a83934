"""The served log's pure parts: the drift statistics, live quality, the picture, the texts as stored,
the log schema, and the writer's bound (which no request ever waits on)."""

import base64
import xml.etree.ElementTree as ElementTree
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast.feature_logging import LoggingConfig

from feature_repo.repo import FEATURE_SERVICES
from sms_core.contracts import log_table
from sms_core.prediction import Answered, Prediction, Read
from sms_core.served_log import drift, quality
from sms_core.served_log.columns import ANSWER_FIELDS, log_schema
from sms_core.served_log.destination import PostgreSQLLoggingDestination
from sms_core.served_log.picture import overlay_markdown
from sms_core.served_log.rows import storable, text_sha256
from sms_core.served_log.writer import AnswerLog

RNG = np.random.default_rng(7)


def test_the_same_distribution_is_near_zero_and_one_beyond_the_reference_is_far() -> None:
    reference = RNG.normal(0, 1, 20_000)
    assert drift.distance("x", reference, RNG.normal(0, 1, 20_000)).value < 0.03
    # All of it in the open top bin, which holds a tenth of the reference: sqrt of the divergence.
    beyond = drift.distance("x", reference, reference + 100)
    p, m = 0.1, (0.1 + 1.0) / 2
    divergence = (0.9 * np.log2(0.9 / 0.45) + p * np.log2(p / m) + 1.0 * np.log2(1.0 / m)) / 2
    assert beyond.value == pytest.approx(np.sqrt(divergence), abs=1e-3) and beyond.severity == "error"
    shifted = drift.distance("x", reference, RNG.normal(1, 1, 20_000))
    assert 0.3 < shifted.value < 1 and shifted.severity == "error"


def test_both_sides_are_binned_on_the_reference_deciles_with_open_ends() -> None:
    found = drift.distance("x", np.arange(1, 101, dtype=float), np.array([-1e9, 1e9]))
    assert found.edges[0] == -np.inf and found.edges[-1] == np.inf and len(found.edges) == 11
    assert found.served[0] == found.served[-1] == 0.5  # out of range, yet counted, in the outer bins
    assert sum(found.reference) == pytest.approx(1.0)


def test_the_score_has_five_fixed_bins_over_zero_to_one() -> None:
    found = drift.score_distance(np.array([0.05, 0.95]), np.array([0.5, 0.5]))
    assert len(found.reference) == 5 and found.served == (0.0, 0.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("value", "statistic", "severity"),
    [
        (0.1, "jensen_shannon", "ok"),
        (drift.WARN_DISTANCE + 0.01, "jensen_shannon", "warn"),
        (drift.ERROR_DISTANCE + 0.01, "jensen_shannon", "error"),
        (drift.WARN_UNSEEN + 0.01, "unseen_share_increase", "warn"),
        (drift.ERROR_UNSEEN + 0.01, "unseen_share_increase", "error"),
    ],
)
def test_severity_follows_the_thresholds_of_its_statistic(
    value: float, statistic: str, severity: str
) -> None:
    assert drift.Statistic("x", statistic, value).severity == severity


def test_no_values_to_compare_is_an_error_naming_the_feature() -> None:
    with pytest.raises(ValueError, match=r"^word counts: no values to compare \(3 reference, 0 served\)"):
        drift.distance("word counts", np.ones(3), np.array([np.nan]))


def test_unseen_ngrams_are_measured_above_the_held_out_share() -> None:
    training = ["see you at the cinema tonight", "call me when you get home"]
    held_out = ["see you at home tonight"]
    like = drift.unseen_increase("text", training, held_out, ["call me at the cinema"])
    unlike = drift.unseen_increase("text", training, held_out, ["returns the decoded JSON document"])
    assert like.value == 0.0 and unlike.value > drift.ERROR_UNSEEN and unlike.severity == "error"


def labelled(version: str, truth: list[str], served: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"model_version": version, "true_label": truth, "served_label": served})


def test_live_quality_is_judged_per_version_against_its_held_out_f1() -> None:
    truth = ["spam"] * 50 + ["ham"] * 150
    good = labelled("a", truth, truth)
    bad = labelled("b", truth, ["ham"] * 25 + ["spam"] * 25 + ["ham"] * 150)  # half the spam missed
    few = labelled("c", truth[:40] + truth[-40:], truth[:40] + truth[-40:])
    found = {q.version: q for q in quality.by_version(pd.concat([good, bad, few]), lambda v: {"f1": 0.9})}
    assert found["a"].f1 == 1.0 and not found["a"].dropped
    assert found["b"].recall == 0.5 and found["b"].dropped and found["b"].as_row()["verdict"] == "dropped"
    assert not found["c"].judged and found["c"].as_row()["verdict"] == "too few labels"


def test_a_version_without_a_manifest_is_reported_but_not_judged_as_dropped() -> None:
    truth = ["spam"] * 50 + ["ham"] * 150
    [found] = quality.by_version(labelled("gone", truth, ["ham"] * 200), lambda v: None)
    assert found.f1 == 0.0 and found.held_out_f1 is None and not found.dropped


def test_the_picture_is_an_svg_with_a_panel_per_binned_statistic() -> None:
    statistics = [
        drift.score_distance(RNG.random(500), RNG.random(500)),
        drift.distance("length", RNG.normal(50, 10, 500), RNG.normal(80, 10, 500)),
        drift.Statistic("text unseen n-grams", "unseen_share_increase", 0.3),
    ]
    markdown = overlay_markdown(statistics, "model <x>: training data vs served")
    encoded = markdown.split("data:image/svg+xml;base64,")[1].rstrip(")")
    svg = ElementTree.fromstring(base64.b64decode(encoded))
    texts = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "model <x>: training data vs served" in texts
    assert sum("Jensen-Shannon" in t for t in texts) == 2  # the unseen share has no bins to draw


def test_texts_are_stored_as_postgres_can_hold_them_and_hashed_as_sent() -> None:
    assert storable("caf\u00e9 \x00 \ud800!") == "caf\u00e9 \ufffd ?!"
    # What Postgres gives: SELECT encode(sha256(convert_to('café', 'UTF8')), 'hex')
    assert text_sha256("caf\u00e9") == "850f7dc43910ff890f8879c0ed26fe697c93a067ad93a7d50f466a7028a9bf4e"
    assert text_sha256("\ud800") != text_sha256("?")  # a lone surrogate is hashed, not replaced


def test_the_log_schema_is_feasts_then_the_answer_and_refuses_a_clash() -> None:
    feast = pa.schema([pa.field("message_id", pa.int64()), pa.field("__request_id", pa.string())])
    assert log_schema(feast).names == ["message_id", "__request_id", *ANSWER_FIELDS.names]
    with pytest.raises(ValueError, match=r"already has columns \['label'\]"):
        log_schema(pa.schema([pa.field("label", pa.string())]))


def test_every_feature_service_logs_to_a_table_of_its_own_and_says_so_in_its_tags() -> None:
    for service in FEATURE_SERVICES:
        config = service.logging_config
        assert isinstance(config, LoggingConfig)
        assert config.destination == PostgreSQLLoggingDestination(table_name=log_table(service.name))
        assert service.tags["logging"] == f"{log_table(service.name)}@{config.sample_rate:g}"
        # The destination comes back from its proto as it went in (what the registry stores).
        again = LoggingConfig.from_proto(config.to_proto())
        assert again is not None and again.destination == config.destination


def answered(n: int) -> Answered:
    """An answer of n predictions of a model of no features (`offer` reads no response then)."""
    predictions = [Prediction(i, 0.25, "ham", "v1", {}) for i in range(n)]
    return Answered(predictions, Read({}, {}, {}))


def test_a_full_queue_drops_and_counts_without_waiting_or_raising() -> None:
    service = FEATURE_SERVICES[0]

    def no_store() -> Any:
        raise AssertionError("offer never touches the store")

    log = AnswerLog(no_store, "postgresql://unused/unused", capacity=10, log_texts=False)
    for n in (6, 4, 1, 3):  # the writer thread is not started: nothing is taken off the queue
        log.offer(service, "id", list(range(n)), answered(n), "v1")
    assert (log.queued, log.counts.dropped["queue_full"]) == (10, 4)
    assert log.describe().startswith("dropping: 4 answers not logged (queue full 4), 0 logged, 10 waiting")

"""The drift check on replays through the real API: quiet on messages like the training data, firing
with ERROR, naming the statistic, on only spam and on texts of another kind."""

import inspect
import json
import random
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from sms_assets.defs.ingestion.dataset import parse_messages
from sms_core.features.schema import TEXT_NAMES
from sms_core.postgres import connect
from sms_core.served_log.drift import MIN_ANSWERS
from tests.integration.served import Graph, check, materialized_slice, replay, run, serving, settled

pytestmark = pytest.mark.integration

HOLDBACK = 500  # the dataset's last messages: never loaded, so no model trained on them
TEXT_FEATURE = TEXT_NAMES[0]


@pytest.fixture(scope="module")
def graph(
    server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, dataset_path: Path
) -> Iterator[Graph]:
    with materialized_slice(
        server_urls, tmp_path_factory.mktemp("drift"), dataset_path, holdback=HOLDBACK
    ) as graph:
        yield graph


def other_kind(n: int) -> list[str]:
    """Sentences of SMS length that no SMS is like: the first paragraphs of standard-library docstrings."""
    import argparse
    import asyncio
    import collections
    import csv
    import decimal
    import email
    import logging
    import pathlib
    import subprocess
    import typing

    found: list[str] = []
    for module in (
        email,
        json,
        csv,
        argparse,
        logging,
        asyncio,
        collections,
        typing,
        pathlib,
        subprocess,
        decimal,
    ):
        for name in sorted(dir(module)):
            paragraph = " ".join((inspect.getdoc(getattr(module, name)) or "").split("\n\n")[0].split())
            if 20 <= len(paragraph) <= 160 and paragraph not in found:
                found.append(paragraph)
    return random.Random(5).sample(found, n)


def judged(graph: Graph, texts: list[str], fresh: bool = True) -> tuple[bool, dg.AssetCheckSeverity, dict]:
    """`texts` sent by text with their texts kept, after (`fresh`) emptying the log; the drift check's
    verdict."""
    if fresh:
        with connect(graph.slice.postgres_url) as conn:
            # The previous replay out of the check's window, and out of the logs it was taken from.
            logs = conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE '%%service%%_log'"
            ).fetchall()
            for (table,) in [*logs, ("served_answers",)]:
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
    with serving(graph, log_texts=True) as (api, log):
        settled(log, replay(api, texts=texts))
    return check(run(graph), "served_traffic_like_training")


def test_a_replay_of_messages_no_model_trained_on_does_not_fire(graph: Graph, dataset_path: Path) -> None:
    held_back = [m.text for m in list(parse_messages(dataset_path))[-HOLDBACK:]]
    passed, _, found = judged(graph, held_back)
    assert passed, found["top_drifting"]
    assert found["verdict"] == "ok" and list(found["judged_versions"].values()) == [HOLDBACK]
    # The statistics of the text: its length, and its n-grams (stored here) against the training texts.
    assert f"{TEXT_FEATURE} length" in found["top_drifting"]
    assert f"{TEXT_FEATURE} unseen n-grams" in found["top_drifting"]
    assert "data:image/svg+xml;base64," in found["histograms"]


def test_only_spam_fires_with_error_naming_the_score_first(graph: Graph, dataset_path: Path) -> None:
    spam = [m.text for m in parse_messages(dataset_path) if m.label == "spam"]
    passed, severity, found = judged(graph, random.Random(1).sample(spam, 300))
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and found["verdict"] == "error"
    top = found["top_drifting"].splitlines()[2]  # the table's first row: the largest statistic
    assert "spam_probability" in top and "| error" in top


def test_a_shift_after_ordinary_traffic_fires_once_it_is_most_of_the_latest_answers(
    graph: Graph, dataset_path: Path
) -> None:
    messages = list(parse_messages(dataset_path))
    assert judged(graph, [m.text for m in messages[-HOLDBACK:]])[0]
    spam = [m.text for m in messages if m.label == "spam"]
    passed, severity, found = judged(graph, random.Random(2).sample(spam, 300), fresh=False)
    # The 300 spam and the latest 200 of the earlier replay: the window is each version's latest 500.
    assert list(found["judged_versions"].values()) == [500]
    assert not passed and severity == dg.AssetCheckSeverity.ERROR


def test_texts_of_another_kind_fire_naming_their_unseen_words(graph: Graph) -> None:
    passed, severity, found = judged(graph, other_kind(300))
    assert not passed and severity == dg.AssetCheckSeverity.ERROR
    [row] = [line for line in found["top_drifting"].splitlines() if "unseen n-grams" in line]
    assert row.rstrip(" |").endswith("error")


def test_too_few_answers_are_not_judged(graph: Graph, dataset_path: Path) -> None:
    spam = [m.text for m in parse_messages(dataset_path) if m.label == "spam"]
    passed, _, found = judged(graph, spam[: MIN_ANSWERS // 2])
    assert passed and found["judged_versions"] == {}
    [reason] = found["not_judged"].values()
    assert reason == f"{MIN_ANSWERS // 2} answers, fewer than {MIN_ANSWERS}"

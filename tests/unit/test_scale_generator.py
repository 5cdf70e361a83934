"""The scale benchmark's generator: N messages of the corpus's shape, nearly every text new."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.scale import change, generate
from sms_assets.defs.ingestion.batches import read_batch
from sms_assets.defs.ingestion.dataset import parse_messages

N = 30_000


def spam_share_and_mean_length(path: Path, skip: int = 0) -> tuple[float, float]:
    messages = list(parse_messages(path))[skip:]
    spam = sum(message.label == "spam" for message in messages) / len(messages)
    return spam, statistics.fmean(len(message.text) for message in messages)


def test_every_drawn_message_is_a_new_text_of_the_corpus_shape(dataset_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "generated"
    generated = generate(dataset_path, target, N)
    corpus = dataset_path.read_bytes().splitlines(keepends=True)
    lines = target.read_bytes().splitlines(keepends=True)
    assert generated.messages == len(lines) == N
    # The real lines first, as they are; the project's own parser reads every line that follows.
    assert [line.rstrip(b"\n") for line in lines[: len(corpus)]] == [line.rstrip(b"\n") for line in corpus]
    assert generated.distinct_texts == len({line.partition(b"\t")[2] for line in lines})
    assert generated.duplicate_share < 0.02, generated
    corpus_spam, corpus_length = spam_share_and_mean_length(dataset_path)
    drawn_spam, drawn_length = spam_share_and_mean_length(target, skip=len(corpus))
    assert abs(drawn_spam - corpus_spam) < 0.02, (drawn_spam, corpus_spam)
    assert abs(drawn_length - corpus_length) / corpus_length < 0.05, (drawn_length, corpus_length)


def test_the_same_seed_gives_the_same_messages_and_the_repeated_profile_repeats(
    dataset_path: Path, tmp_path: Path
) -> None:
    generate(dataset_path, tmp_path / "first", 10_000)
    generate(dataset_path, tmp_path / "second", 10_000)
    assert (tmp_path / "first").read_bytes() == (tmp_path / "second").read_bytes()
    repeated = generate(dataset_path, tmp_path / "repeated", 10_000, vary=False)
    corpus_texts = {line.partition(b"\t")[2].rstrip(b"\n") for line in dataset_path.read_bytes().splitlines()}
    assert repeated.distinct_texts == len(corpus_texts)


def test_fewer_messages_than_the_corpus_are_its_first_lines(dataset_path: Path, tmp_path: Path) -> None:
    generated = generate(dataset_path, tmp_path / "small", 100)
    assert generated.messages == 100
    assert (tmp_path / "small").read_bytes().splitlines() == dataset_path.read_bytes().splitlines()[:100]


def test_the_change_run_edits_removes_and_lands_a_third_each(dataset_path: Path, tmp_path: Path) -> None:
    dataset, landing = tmp_path / "generated", tmp_path / "landing"
    generate(dataset_path, dataset, 3_000)
    before = dataset.read_bytes().splitlines()
    assert change(dataset, landing, 0.01) == {"edited": 10, "removed": 10, "added": 10}
    after = dataset.read_bytes().splitlines()
    # The last ten lines removed; ten of the others edited in place, each keeping its label.
    assert len(after) == len(before) - 10
    edited = [(old, new) for old, new in zip(before, after, strict=False) if old != new]
    assert len(edited) == 10
    assert all(old.partition(b"\t")[0] == new.partition(b"\t")[0] for old, new in edited)
    # Ten new messages and their labels, in batches the landing's own reader takes.
    messages, labels = (read_batch(landing / f"bench-change-{kind}.tsv") for kind in ("messages", "labels"))
    assert len(messages.messages) == len(labels.labels) == 10

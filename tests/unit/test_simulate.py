"""The replay of held-back messages: how the tail is cut into batches, and when labels follow."""

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sms_assets.defs.ingestion.batches import message_id_for, read_batch
from sms_assets.defs.ingestion.dataset import EPOCH, Message
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.ingestion.simulate import ArrivalStream, held_back, replay, split, summary

MESSAGES = [Message(n, EPOCH, "spam" if n % 3 == 0 else "ham", f"text {n}") for n in range(1, 11)]


@pytest.mark.parametrize(
    ("count", "batches", "sizes"),
    [(10, 3, [4, 3, 3]), (10, 10, [1] * 10), (3, 5, [1, 1, 1]), (10, 1, [10])],
)
def test_split_keeps_order_and_balances(count: int, batches: int, sizes: list[int]) -> None:
    slices = split(MESSAGES[:count], batches)
    assert [len(s) for s in slices] == sizes
    assert [m for s in slices for m in s] == MESSAGES[:count]


def test_held_back_is_the_tail_of_the_dataset(dataset_path: Path) -> None:
    tail = held_back(dataset_path, 100)
    assert [m.message_id for m in tail] == list(range(5475, 5575))
    with pytest.raises(ValueError, match="holdback must be from 1 to 5573"):
        held_back(dataset_path, 5574)


def test_stream_lands_messages_in_order_and_labels_later(tmp_path: Path) -> None:
    folder = LandingFolder(tmp_path)
    stream = ArrivalStream(folder, MESSAGES, batches=3, label_delay=1, prefix="t")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    ticks = []
    while (landed := stream.land_next(start + timedelta(seconds=len(ticks)))) is not None:
        ticks.append(landed)
    # Three message batches, then one more tick for the labels still owed.
    assert [bool(t.message_ids) for t in ticks] == [True, True, True, False]
    assert [t.labels_name is not None for t in ticks] == [False, True, True, True]
    assert stream.done()

    batches = [read_batch(p) for p in folder.pending()]
    messages = [m for b in batches for m in b.messages]
    labels = [x for b in batches for x in b.labels]
    assert [m.sms_id for m in messages] == [f"t-{n}" for n in range(1, 11)]
    assert [m.message_id for m in messages] == [i for t in ticks for i in t.message_ids]
    assert all(a.event_timestamp < b.event_timestamp for a, b in itertools.pairwise(messages))
    assert {x.sms_id: x.label for x in labels} == {f"t-{m.message_id}": m.label for m in MESSAGES}
    # Each label lands after its message: a batch later.
    arrived = {m.sms_id: m.event_timestamp for m in messages}
    assert all(x.labelled_at - arrived[x.sms_id] >= timedelta(seconds=1) for x in labels)
    assert message_id_for("t-1") == messages[0].message_id


def test_labels_can_come_with_their_messages(tmp_path: Path) -> None:
    stream = ArrivalStream(LandingFolder(tmp_path), MESSAGES, batches=2, label_delay=0)
    first = stream.land_next()
    assert first is not None and first.labels_name is not None
    assert stream.land_next() is not None
    assert stream.done()


def test_replay_without_measuring_lands_everything(tmp_path: Path) -> None:
    stream = ArrivalStream(LandingFolder(tmp_path), MESSAGES, batches=2, label_delay=1)
    lines: list[str] = []
    assert replay(stream, interval_s=0, say=lines.append) == []
    assert stream.done()
    assert len(LandingFolder(tmp_path).pending()) == 4  # two message batches, two label batches
    assert sum(line.endswith("5 messages") for line in lines) == 2


def test_replay_times_each_batch_until_readable(tmp_path: Path) -> None:
    stream = ArrivalStream(LandingFolder(tmp_path), MESSAGES, batches=2, label_delay=0)
    served: set[int] = set()

    def readable(ids: list[int]) -> bool:
        # Each batch becomes readable on the check after the one that first saw it.
        ready = all(i in served for i in ids)
        served.update(ids)
        return ready

    delays = replay(stream, interval_s=0, readable=readable, say=lambda _: None)  # type: ignore[arg-type]
    assert [d.messages for d in delays] == [5, 5]
    assert all(d.seconds >= 0 for d in delays)
    assert "2 batches of 10 messages" in summary(delays)

"""The held-back tail of the dataset, replayed into the landing folder as a stream of arrivals.

Batch n carries the next slice of the held-back messages, in dataset order, each stamped with the time
it "arrived" (just before its batch lands). Their labels come `label_delay` batches later, in a batch
of their own, as a moderation team's verdicts would. Batch names start with the landing time, so the
folder's name order is the order of arrival.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sms_assets.defs.ingestion.batches import LABELS_HEADER, MESSAGES_HEADER, message_id_for
from sms_assets.defs.ingestion.dataset import Message, parse_messages
from sms_assets.defs.ingestion.landing import LandingFolder

DEFAULT_HOLDBACK = 500


def held_back(path: Path, holdback: int) -> list[Message]:
    """The last `holdback` messages of the dataset, the ones the initial load leaves out."""
    messages = list(parse_messages(path))
    if not 0 < holdback < len(messages):
        raise ValueError(f"holdback must be from 1 to {len(messages) - 1}, got {holdback}")
    return messages[-holdback:]


def split(messages: Sequence[Message], batches: int) -> list[list[Message]]:
    """`messages` in order, cut into `batches` slices whose sizes differ by at most one."""
    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches}")
    size, extra = divmod(len(messages), batches)
    slices, start = [], 0
    for index in range(batches):
        end = start + size + (1 if index < extra else 0)
        slices.append(list(messages[start:end]))
        start = end
    return [s for s in slices if s]


def sms_id(prefix: str, message: Message) -> str:
    """The producer's id of a replayed message: the same on every replay, so a replay dedupes."""
    return f"{prefix}-{message.message_id}"


@dataclass(frozen=True)
class Landed:
    """One batch of messages as it landed, and the labels batch that landed with it, if any."""

    name: str
    message_ids: list[int]
    landed_at: datetime
    labels_name: str | None


class ArrivalStream:
    """Lands the replay one tick at a time: `land_next()` is one tick of the producer."""

    def __init__(
        self,
        folder: LandingFolder,
        messages: Sequence[Message],
        batches: int,
        label_delay: int = 1,
        prefix: str = "uci",
    ):
        if label_delay < 0:
            raise ValueError(f"label_delay must be 0 or more, got {label_delay}")
        self.folder = folder
        self.slices = split(messages, batches)
        self.label_delay = label_delay
        self.prefix = prefix
        self.landed: list[Landed] = []
        self._ticks = 0
        self._labelled = 0  # slices whose labels have landed

    def done(self) -> bool:
        return len(self.landed) == len(self.slices) and self._labelled == len(self.slices)

    def land_next(self, now: datetime | None = None) -> Landed | None:
        """Land the next slice of messages, if any is left, and the labels due by now.

        Tick t lands slice t and the labels of slices up to t - label_delay; once the messages are
        all out, further ticks land only the labels still owed. Returns None when nothing is left.
        """
        if self.done():
            return None
        now = now or datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        tick = self._ticks
        self._ticks += 1
        landed = Landed("", [], now, None)
        if tick < len(self.slices):
            batch = self.slices[tick]
            rows = [
                # Arrived over the last milliseconds before the batch landed, in dataset order.
                (sms_id(self.prefix, m), now - timedelta(milliseconds=len(batch) - i), m.text)
                for i, m in enumerate(batch)
            ]
            name = f"{stamp}-{self.prefix}-{tick + 1:04d}-messages.tsv"
            self.folder.land(name, MESSAGES_HEADER, rows)
            landed = Landed(name, [message_id_for(row[0]) for row in rows], now, None)
            self.landed.append(landed)
        due = min(len(self.slices), tick + 1 - self.label_delay)
        if due > self._labelled:
            labelled = [m for s in self.slices[self._labelled : due] for m in s]
            labels_name = f"{stamp}-{self.prefix}-{tick + 1:04d}-labels.tsv"
            self.folder.land(
                labels_name, LABELS_HEADER, [(sms_id(self.prefix, m), now, m.label) for m in labelled]
            )
            self._labelled = due
            landed = Landed(landed.name, landed.message_ids, now, labels_name)
        return landed


@dataclass(frozen=True)
class Delay:
    batch: str
    messages: int
    seconds: float


def replay(
    stream: ArrivalStream,
    interval_s: float,
    readable: Callable[[Sequence[int]], bool] | None = None,
    timeout_s: float = 600,
    say: Callable[[str], None] = print,
) -> list[Delay]:
    """Land a tick every `interval_s`; with `readable`, also time each batch until Redis serves it."""
    waiting: list[tuple[Landed, float]] = []
    delays: list[Delay] = []
    next_landing = time.monotonic()
    deadline = float("inf")
    while not stream.done() or waiting:
        if not stream.done() and time.monotonic() >= next_landing:
            landed = stream.land_next()
            assert landed is not None
            if landed.message_ids:
                say(f"landed {landed.name}: {len(landed.message_ids)} messages")
                waiting.append((landed, time.monotonic()))
            if landed.labels_name:
                say(f"landed {landed.labels_name}")
            next_landing += interval_s
            if stream.done():
                deadline = time.monotonic() + timeout_s
        if readable is None:
            waiting.clear()
            time.sleep(max(0.0, next_landing - time.monotonic()) if not stream.done() else 0)
            continue
        for item in list(waiting):
            landed, landed_at = item
            if readable(landed.message_ids):
                seconds = time.monotonic() - landed_at
                delays.append(Delay(landed.name, len(landed.message_ids), seconds))
                say(f"{landed.name}: readable from Redis {seconds:.1f} s after landing")
                waiting.remove(item)
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(waiting)} batch(es) not readable from Redis {timeout_s:.0f} s after the last "
                f"landed, first {waiting[0][0].name}: are the sensors and automation running "
                "(sms-assets dev, or the compose daemon)?"
            )
        time.sleep(0.1)
    return delays


def summary(delays: Sequence[Delay]) -> str:
    seconds = sorted(d.seconds for d in delays)
    return (
        f"landing to readable from Redis, {len(seconds)} batches of {sum(d.messages for d in delays)} "
        f"messages: p50 {statistics.median(seconds):.1f} s, min {seconds[0]:.1f} s, max {seconds[-1]:.1f} s"
    )


def parse_duration(text: str) -> float:
    """Seconds from `5`, `5s`, `500ms` or `2m`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 5s, 500ms or 2m")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]

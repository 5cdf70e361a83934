"""`sms-assets traffic`: a replay of traffic against a running prediction API, so that its served log
has answers to judge (docs/served-log.md).

The messages come from the SMS Spam Collection (the held-back tail, only spam, only ham, or known ids)
or from a file of texts, one a line (texts of another kind). Each batch request goes over plain HTTP
with the standard library, as any client would send it; the answers' model versions are counted.
"""

from __future__ import annotations

import argparse
import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("held-back", "spam", "ham", "ids")
BATCH = 50


def add_command(
    command: Callable[[str, str], argparse.ArgumentParser],
    dataset: Callable[[], Path],
    holdback: Callable[[], int],
    token: Callable[[], str | None],
) -> None:
    """Register `traffic` through the CLI's `command(name, summary)`."""
    traffic = command("traffic", "Replay messages against a running prediction API (its answers are logged).")
    traffic.add_argument("--url", default="http://127.0.0.1:8000", help="the API")
    source = traffic.add_mutually_exclusive_group()
    source.add_argument(
        "--kind",
        choices=KINDS,
        default="held-back",
        help="held-back: the dataset's last SMS_DATASET_HOLDBACK messages, by text (no model trained on "
        "them); spam or ham: random messages of that label, by text; ids: random loaded ids, by id",
    )
    source.add_argument("--file", type=Path, help="texts, one a line, sent by text")
    traffic.add_argument("--count", type=int, default=500, help="messages to send")
    traffic.add_argument("--token", help="the bearer token, when the API requires one; unset: SMS_API_TOKEN")
    traffic.add_argument("--seed", type=int, default=1, help="the seed that draws the messages")

    def handler(args: argparse.Namespace) -> int:
        if args.count < 1:
            raise SystemExit("error: --count must be at least 1")
        key, items = messages(args, dataset, holdback)
        versions = replay(args.url, key, items, args.token or token())
        shown = ", ".join(f"{version} {n}" for version, n in sorted(versions.items()))
        form = "id" if key == "message_ids" else "text"
        print(f"sent {len(items)} messages by {form} to {args.url}; answers by model version: {shown}")
        return 0

    traffic.set_defaults(handler=handler)


def messages(
    args: argparse.Namespace, dataset: Callable[[], Path], holdback: Callable[[], int]
) -> tuple[str, list[Any]]:
    """("texts" or "message_ids", the items to send)."""
    rng = random.Random(args.seed)
    if args.file is not None:
        try:
            lines = [line.strip() for line in args.file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"error: cannot read --file {args.file}: {exc}") from None
        texts = [line for line in lines if line]
        if not texts:
            raise SystemExit(f"error: --file {args.file} holds no text")
        return "texts", [rng.choice(texts) for _ in range(args.count)] if len(texts) < args.count else texts[
            : args.count
        ]
    from sms_assets.defs.ingestion.dataset import parse_messages

    everything = list(parse_messages(dataset()))
    tail = holdback()
    if args.kind == "held-back":
        if not tail:
            raise SystemExit(
                "error: --kind held-back needs SMS_DATASET_HOLDBACK (the initial load left none out)"
            )
        return "texts", [m.text for m in everything[-tail:]][: args.count]
    if args.kind == "ids":
        loaded = [m.message_id for m in everything[: len(everything) - tail]]
        return "message_ids", rng.sample(loaded, min(args.count, len(loaded)))
    labelled = [m.text for m in everything if m.label == args.kind]
    return "texts", rng.sample(labelled, min(args.count, len(labelled)))


def replay(url: str, key: str, items: Sequence[Any], token: str | None) -> Counter[str]:
    """POST /predict/batch for each BATCH of items; the answers counted by model version."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    versions: Counter[str] = Counter()
    for start in range(0, len(items), BATCH):
        body = json.dumps({key: list(items[start : start + BATCH])}).encode()
        request = urllib.request.Request(f"{url.rstrip('/')}/predict/batch", body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(
                f"error: {url} answered {exc.code}: {exc.read().decode(errors='replace')[:300]}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SystemExit(f"error: {url} did not answer: {exc}") from None
        versions[answer["model_version"]] += len(answer["predictions"])
    return versions

"""`sms-assets simulate`: the held-back end of the dataset replayed into the landing folder, as arrivals."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from sms_assets.defs.ingestion import simulate
from sms_core import settings


def add_command(
    command: Callable[[str, str], argparse.ArgumentParser],
    service_env: Callable[[], dict[str, str]],
    resources: Callable[[dict[str, str]], dict[str, Any]],
) -> None:
    """Register `simulate` through the CLI's `command(name, summary)`."""
    sim = command("simulate", "Replay the held-back end of the dataset into the landing folder, as arrivals.")
    sim.add_argument("--batches", type=int, default=10, help="how many message batches")
    sim.add_argument("--interval", type=duration, default="5s", help="time between batches")
    sim.add_argument(
        "--holdback",
        type=int,
        default=argparse.SUPPRESS,
        help=f"messages to replay (default: {settings.HOLDBACK_ENV}, else {simulate.DEFAULT_HOLDBACK})",
    )
    sim.add_argument("--label-delay", type=int, default=1, help="batches before a batch's labels follow")
    sim.add_argument(
        "--prefix", default="uci", help="sms_id prefix; a new one sends the texts again as new messages"
    )
    sim.add_argument(
        "--measure", action="store_true", help="time each batch from landing until Redis serves all of it"
    )
    sim.add_argument("--timeout", type=duration, default="10m", help="how long --measure waits at the end")

    def handler(args: argparse.Namespace) -> int:
        env = service_env()
        return run(args, env, resources(env))

    sim.set_defaults(handler=handler)


def run(args: argparse.Namespace, env: dict[str, str], resources: dict[str, Any]) -> int:
    from sms_core.prediction import all_online

    configured = int(env[settings.HOLDBACK_ENV])
    holdback = getattr(args, "holdback", None) or configured or simulate.DEFAULT_HOLDBACK
    if holdback > configured:
        print(
            f"note: the initial load holds back {configured} messages ({settings.HOLDBACK_ENV}), so "
            f"{holdback - configured} of the {holdback} replayed texts are also in it; they arrive "
            "as new messages, with new ids",
            file=sys.stderr,
        )
    folder = resources["landing"].folder()
    messages = simulate.held_back(resources["dataset"].fetch(), holdback)
    stream = simulate.ArrivalStream(folder, messages, args.batches, args.label_delay, args.prefix)
    print(
        f"replaying the last {holdback} messages of the dataset into {folder.root}: "
        f"{len(stream.slices)} batches, one every {args.interval:g} s, labels {args.label_delay} "
        "batch(es) later",
        flush=True,
    )
    # --measure: each batch is timed until Redis serves every one of its messages.
    store = resources["feast"].store() if args.measure else None
    readable = functools.partial(all_online, store) if store else None
    delays = simulate.replay(stream, args.interval, readable, timeout_s=args.timeout)
    if delays:
        print(simulate.summary(delays))
    if stream.landed:
        print(f"score one: sms-assets predict --message-id {stream.landed[-1].message_ids[-1]}")
    return 0


def duration(text: str) -> float:
    try:
        return simulate.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

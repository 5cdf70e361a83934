"""Planned once, written in pieces side by side, finished when every piece succeeded: the shape of the
two large writes (`sms_features` recomputing its table, `online_store` syncing Redis).

The plan step yields what the last step needs ("planned") and the pieces (a dynamic output); the
executor runs one piece step per piece, as many at once as it allows; the finish step gets the plan and
every piece's `PieceWritten`, and commits what must wait for all of them (a table swap, a watermark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg

Piece = TypeVar("Piece")


@dataclass(frozen=True)
class PieceWritten:
    """What one piece wrote, and when it ran (time.time(): the pieces run in processes of their own)."""

    rows: int
    started: float
    ended: float


def planned(
    plan: Any, pieces: Iterable[Piece], key: Callable[[Piece], str]
) -> Iterator[dg.Output | dg.DynamicOutput]:
    """What a plan step yields: the plan, then each piece under its mapping key."""
    yield dg.Output(plan, "planned")
    for piece in pieces:
        yield dg.DynamicOutput(piece, mapping_key=key(piece), output_name="pieces")


def most_at_once(pieces: Sequence[PieceWritten]) -> int:
    """The most pieces that ran at any one moment."""
    edges = sorted([(p.started, 1) for p in pieces] + [(p.ended, -1) for p in pieces])
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same moment
        running += step
        most = max(most, running)
    return most


def summary(written: Sequence[PieceWritten], started: float, ended: float, rows: int) -> dict[str, Any]:
    """The finish step's metadata on how the pieces went: how many, how many at once, how fast."""
    seconds = ended - started
    return {
        "pieces": len(written),
        "pieces_at_once": most_at_once(written),
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds) if seconds else 0,
    }


def fan_out_asset(
    *,
    name: str,
    plan: dg.OpDefinition,
    piece: dg.OpDefinition,
    finish: dg.OpDefinition,
    config: type[dg.Config],
    ins: Mapping[str, dg.AssetIn],
    **asset: Any,
) -> dg.AssetsDefinition:
    """A graph asset: `plan` (with the asset's `config`), `piece` on each of its pieces, then `finish`
    with the plan and every piece's result. `asset` is the rest of `dg.graph_asset`'s arguments."""
    # The asset's config is the plan step's: a run config names the asset, not its steps.
    to_plan = dg.ConfigMapping(
        config_fn=lambda values: {plan.name: {"config": values}}, config_schema=config.to_config_schema()
    )

    def compose(**upstream: Any) -> Any:
        plan_value, pieces = plan(**upstream)
        return finish(plan_value, pieces.map(piece).collect())

    return dg.graph_asset(name=name, ins=ins, config=to_plan, **asset)(compose)

"""The spam models compared on the project's own split, over several seeds, and their cost per text.

The dataset (SMS_DATASET_PATH, or the download) is read as ingestion reads it; each message's features
are computed by `compute_features`, the function that builds the feature table; each seed splits the
messages as `spam_model` does (duplicate texts on one side by the md5 of the text, a quarter held out)
and trains both model kinds with the code and hyper-parameters the asset uses. Seed 42 is the asset's
own split (with no message held back for the arrivals); the summary is the mean and standard deviation
over SEEDS. The cost per text is `spam_scores` on one message at a time, as the API calls it, each
text scored for the first time (the memo of texts' columns emptied, the memo of words' kept).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo import repo
from sms_assets.defs.ingestion.dataset import parse_messages
from sms_assets.defs.training.assets import TrainingConfig
from sms_core.contracts import TEXT_TWINS
from sms_core.features.compute import compute_features
from sms_core.model import hashing, metrics
from sms_core.model import pipelines as model

SEEDS = (0, 1, 2, 3, 4)
ASSET_SEED = TrainingConfig().seed
SHOWN = metrics.HEADLINE
TIMED_CALLS = 2_000


def _frame(dataset: Path) -> pd.DataFrame:
    rows = [(m.message_id, m.label, m.text) for m in parse_messages(dataset)]
    messages = pd.DataFrame(rows, columns=["message_id", "label", "text"])
    features = compute_features(messages["text"])
    features["text_group"] = messages["text"].map(lambda t: hashlib.md5(str(t).encode()).hexdigest())
    return pd.concat([messages[["message_id", "label"]], features], axis=1)


def _train(frame: pd.DataFrame, service: str, seed: int) -> tuple[Any, list[str], pd.DataFrame]:
    config = TrainingConfig(feature_service=service, seed=seed).model_dump()
    [features] = [
        [f.name for projection in s.feature_view_projections for f in projection.features]
        for s in repo.FEATURE_SERVICES
        if s.name == service
    ]
    split = model.split_by_text(frame, "text_group", config["test_fraction"], seed)
    inputs, labels = model.model_input(features, split.train), (split.train["label"] == "spam").to_numpy()
    trained = model.fit(model.PIPELINES[service](config), lambda: iter([(inputs, labels)]), len(frame))
    return trained, features, split.test


def run(dataset: Path, quick: bool = False) -> dict[str, Any]:
    frame = _frame(dataset)
    seeds = (ASSET_SEED, SEEDS[0]) if quick else (ASSET_SEED, *SEEDS)
    method = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""
    section: dict[str, Any] = {"method": method, "messages": len(frame), "seeds": list(seeds), "models": {}}
    for service in TEXT_TWINS:
        per_seed, cost = {}, {}
        for seed in seeds:
            trained, features, test = _train(frame, service, seed)
            is_spam = (test["label"] == "spam").to_numpy()
            values = metrics.evaluate(is_spam, model.spam_scores(trained, model.model_input(features, test)))
            per_seed[seed] = {name: values[name] for name in SHOWN}
            if seed == ASSET_SEED:
                cost = _cost(trained, features, test, 200 if quick else TIMED_CALLS)
        summary_seeds = [s for s in seeds if s != ASSET_SEED] or list(seeds)
        section["models"][service] = {
            "asset_split": per_seed[ASSET_SEED],
            "per_seed": {str(s): per_seed[s] for s in summary_seeds},
            "mean": {n: float(np.mean([per_seed[s][n] for s in summary_seeds])) for n in SHOWN},
            "sd": {n: float(np.std([per_seed[s][n] for s in summary_seeds])) for n in SHOWN},
            "one_text": cost,
        }
    return section


def _cost(trained: Any, features: list[str], test: pd.DataFrame, calls: int) -> dict[str, float]:
    """Milliseconds for `spam_scores` on one message at a time (p50, p99), each text scored for the first
    time: the memo of texts' columns is emptied first, since the metrics above scored these same texts
    (the memo of words' columns is kept, as a running server keeps it)."""
    rows = [model.model_input(features, test.iloc[[i % len(test)]]) for i in range(min(calls, len(test)))]
    hashing.columns.cache_clear()
    timings = []
    for row in rows:
        started = time.perf_counter()
        model.spam_scores(trained, row)
        timings.append(time.perf_counter() - started)
    return {name: float(np.percentile(timings, q) * 1e3) for name, q in (("p50_ms", 50), ("p99_ms", 99))}


def print_table(section: dict[str, Any]) -> None:
    seeds = ", ".join(map(str, section["models"]["sms_service"]["per_seed"]))
    print(f"\nmodel: {section['messages']:,} messages; the asset's split (seed {ASSET_SEED}), and mean ± sd")
    print(f"over seeds {seeds}; one text: spam_scores on one message, p50 / p99 ms")
    print(f"{'feature service':<16} {'':<11}" + "".join(f"{n:>17}" for n in SHOWN) + f"{'one text':>20}")
    for service, m in section["models"].items():
        cost = m["one_text"]
        asset = "".join(f"{m['asset_split'][n]:>17.4f}" for n in SHOWN)
        print(f"{service:<16} {'asset split':<11}{asset}{cost['p50_ms']:>11.3f} / {cost['p99_ms']:.3f}")
        spread = "".join(f"{m['mean'][n]:>10.4f} ± {m['sd'][n]:.4f}" for n in SHOWN)
        print(f"{'':<16} {'mean ± sd':<11}{spread}")

"""Leave-one-conversation-out: recall that tuning on the sample cannot flatter.

Every candidate configuration (what is stored and indexed, fusion, weights, candidate counts,
thresholds: bench.recall.run's grid) has answered every question. For each conversation in turn,
the configuration with the best overall recall@10 on the *other* conversations is chosen, and only
its answers on the held-out conversation count. The held-out answers of all folds together are
the headline (per category); the per-fold scores give the mean and the spread. Ties go to the
earlier candidate, and the defaults come first, so a knob moves only when it wins on the training
conversations.
"""

from __future__ import annotations

from statistics import mean, pstdev
from typing import Any

from bench.recall.metrics import Row, by_conversation, grouped, summarise

METRIC = "any@10"


def training_score(rows: list[Row], held_out: str) -> float:
    chosen = [row[METRIC] for conversation, _, row in rows if conversation != held_out]
    return mean(chosen) if chosen else 0.0


def leave_one_out(candidates: dict[str, list[Row]]) -> dict[str, Any]:
    """``candidates``: every configuration's per-question rows, in preference order (defaults first)."""
    names = list(candidates)
    conversations = sorted(by_conversation(candidates[names[0]]))
    folds: list[dict[str, Any]] = []
    held_rows: list[Row] = []
    for held_out in conversations:
        train = {name: training_score(candidates[name], held_out) for name in names}
        best = max(names, key=lambda name: (train[name], -names.index(name)))
        rows = by_conversation(candidates[best])[held_out]
        held_rows += rows
        scores = summarise(grouped(rows))
        folds.append(
            {
                "held_out": held_out,
                "chosen": best,
                "train_any@10": round(100 * train[best], 1),
                "recall": scores,
            }
        )
    per_fold = [fold["recall"]["overall"][METRIC] for fold in folds]
    return {
        "metric": METRIC,
        "recall": summarise(grouped(held_rows)),  # every held-out answer, pooled over the folds
        "folds": folds,
        "fold_mean": round(mean(per_fold), 1),
        "fold_spread": round(pstdev(per_fold), 1),
        "fold_min": min(per_fold),
        "fold_max": max(per_fold),
    }


def in_sample(candidates: dict[str, list[Row]]) -> dict[str, Any]:
    """The best configuration chosen on all five and scored on the same five: what tuning on the
    sample reports, for comparison with the held-out figure."""
    names = list(candidates)
    best = max(names, key=lambda name: (mean(row[METRIC] for _, _, row in candidates[name]), -names.index(name)))
    return {"chosen": best, "recall": summarise(grouped(candidates[best]))}

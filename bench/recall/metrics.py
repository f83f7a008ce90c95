"""Evidence recall: for each question, where in a ranked list of dia_id groups the evidence appears."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean

from bench.recall.locomo import CATEGORIES, Question

KS = (1, 5, 10, 20)


@dataclass
class Scores:
    """Per-question results of one method, summarised per category and overall."""

    hits: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    # Every question's row with its conversation and category, for per-conversation and
    # leave-one-conversation-out figures (bench.recall.loo).
    rows: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)

    def add(self, question: Question, ranked: Sequence[Sequence[str]], conversation: str = "") -> None:
        row: dict[str, float] = {}
        for k in KS:
            found = {dia for group in ranked[:k] for dia in group} & question.evidence
            row[f"any@{k}"] = 1.0 if found else 0.0
            row[f"frac@{k}"] = len(found) / len(question.evidence)
        first = next((rank for rank, group in enumerate(ranked, 1) if question.evidence & set(group)), None)
        row["mrr"] = 1.0 / first if first else 0.0
        self.hits[CATEGORIES[question.category]].append(row)
        self.hits["overall"].append(row)
        self.rows.append((conversation, CATEGORIES[question.category], row))

    def summary(self) -> dict[str, dict[str, float]]:
        return summarise(self.hits)

    def per_conversation(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: summarise(grouped(rows)) for name, rows in by_conversation(self.rows).items()}


Row = tuple[str, str, dict[str, float]]


def grouped(rows: Sequence[Row]) -> dict[str, list[dict[str, float]]]:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _, category, row in rows:
        groups[category].append(row)
        groups["overall"].append(row)
    return groups


def by_conversation(rows: Sequence[Row]) -> dict[str, list[Row]]:
    found: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        found[row[0]].append(row)
    return dict(found)


def summarise(hits: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    order = [*CATEGORIES.values(), "overall"]
    return {
        name: {key: round(100 * mean(r[key] for r in rows), 1) for key in rows[0]} | {"n": len(rows)}
        for name in order
        if (rows := hits.get(name))
    }

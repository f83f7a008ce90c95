"""Baselines over the raw turns, indexed as "[date] Speaker: text": Okapi BM25 (pure Python) and
dense retrieval with Mnemo's own embedder (exact cosine, numpy)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Bm25Index:
    """Okapi BM25 (k1=1.5, b=0.75, the usual defaults) over one conversation's turns."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.docs = [Counter(tokens(d)) for d in documents]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / max(1, len(self.docs))
        frequency = Counter(term for d in self.docs for term in d)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
        self.k1, self.b = k1, b

    def rank(self, query: str, limit: int) -> list[int]:
        terms = [t for t in set(tokens(query)) if t in self.idf]
        scores = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            norm = self.k1 * (1 - self.b + self.b * length / self.avg)
            score = sum(self.idf[t] * doc[t] * (self.k1 + 1) / (doc[t] + norm) for t in terms if t in doc)
            scores.append((score, i))
        scores.sort(key=lambda pair: -pair[0])
        return [i for _, i in scores[:limit]]


class DenseIndex:
    def __init__(self, vectors: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        self.vectors = vectors

    def rank(self, query: Sequence[float], limit: int) -> list[int]:
        similarities = self.vectors @ np.asarray(query, dtype=np.float32)
        return [int(i) for i in np.argsort(-similarities)[:limit]]

"""The keyword side of hybrid search: the text a memory is indexed under, and its BM25 sparse vector.

A memory is indexed together with its context, ``[2023-05-08] Caroline: text``: the date it was
said (``metadata.session_date`` for imported conversations, else the memory's creation date) and
who said it (``metadata.speaker``, when known), so "when did ..." and "what did X say ..." match;
and the message it answered (``metadata.reply_to``, when known), so "Yes, last week!" is found by
the question it answers.

Sparse vectors come from Qdrant Edge's built-in BM25 document model (word tokenizer, English
stemming and stop words, term ids hashed to u32): deterministic, no model download, and the same
vectors for both backends. The store applies the IDF modifier at query time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

import qdrant_edge as qe

from mnemo.models import Memory

SPARSE_VECTOR = "bm25"
# Expected document length in tokens for BM25's length normalisation. Changing it changes stored
# vectors, so it is a constant, not a setting. The library default (256) measured as well as or better
# than a sentence-sized 24 on the LOCOMO sample (bench/README.md, recall).
AVG_DOC_TOKENS = 256.0


def context_line(text: str, created_at: datetime, metadata: Mapping[str, Any]) -> str:
    date = metadata.get("session_date")
    if not isinstance(date, str) or not date:
        date = created_at.date().isoformat()
    speaker = metadata.get("speaker")
    line = f"[{date}] {speaker}: {text}" if isinstance(speaker, str) and speaker else f"[{date}] {text}"
    reply_to = metadata.get("reply_to")
    return f"{line} (replying to {reply_to})" if isinstance(reply_to, str) and reply_to else line


def memory_context_line(memory: Memory) -> str:
    return context_line(memory.text, memory.created_at, memory.metadata)


@cache
def _bm25() -> qe.Bm25:
    return qe.Bm25(qe.Bm25Config(avg_len=AVG_DOC_TOKENS))


def document_vector(text: str) -> qe.SparseVector:
    return _bm25().embed_document(text)


def query_vector(text: str) -> qe.SparseVector:
    return _bm25().embed_query(text)

"""The keyword side of hybrid search: the text a memory is indexed under, and its BM25 sparse vector.

A memory is indexed together with its context, ``[2023-05-08] Caroline: text``: the date it was
said (``metadata.session_date`` for imported conversations, else the memory's creation date) and
who said it (``metadata.speaker``, when known), so "when did ..." and "what did X say ..." match;
and the message it answered (``metadata.reply_to``, when known), so "Yes, last week!" is found by
the question it answers.

Dates are keyword terms too (mnemo.time_terms): the keyword document also carries ``day20230507``
and ``month202305`` for the day a memory was said and each day it talks about ("last night",
"two weeks ago", resolved against the day it was said), and a query carries the terms of the dates
it names ("on 1 May, 2023", "in June"), so a question naming a day or month finds what was said
about it. Measured on the LOCOMO sample in leave-one-conversation-out (bench/results/recall.md).

Sparse vectors come from Qdrant Edge's built-in BM25 document model (word tokenizer, English
stemming and stop words, term ids hashed to u32): deterministic, no model download, and the same
vectors for both backends. The store applies the IDF modifier at query time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from typing import Any

import qdrant_edge as qe

from mnemo import time_terms
from mnemo.models import Memory

SPARSE_VECTOR = "bm25"
# Expected document length in tokens for BM25's length normalisation. Changing it changes stored
# vectors, so it is a constant, not a setting. The library default (256) measured as well as or better
# than a sentence-sized 24 on the LOCOMO sample (bench/README.md, recall).
AVG_DOC_TOKENS = 256.0
# Date terms in keyword documents and queries (module docstring). A constant like AVG_DOC_TOKENS, as
# it shapes stored vectors; bench/recall switches it off to measure what it buys.
DATE_TERMS = True


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


def said_on(memory: Memory) -> date:
    said = memory.metadata.get("session_date")
    if isinstance(said, str) and said:
        try:
            return date.fromisoformat(said[:10])
        except ValueError:
            pass  # a client's free-form date: the memory's own day instead
    return memory.created_at.date()


def keyword_text(memory: Memory) -> str:
    """What a memory's keyword vector is built from: its context line, then its date terms."""
    line = memory_context_line(memory)
    return f"{line} {time_terms.document_terms(memory.text, said_on(memory))}" if DATE_TERMS else line


@cache
def _bm25() -> qe.Bm25:
    return qe.Bm25(qe.Bm25Config(avg_len=AVG_DOC_TOKENS))


def document_vector(text: str) -> qe.SparseVector:
    return _bm25().embed_document(text)


def query_vector(text: str) -> qe.SparseVector:
    terms = time_terms.query_terms(text) if DATE_TERMS else ""
    return _bm25().embed_query(f"{text} {terms}" if terms else text)

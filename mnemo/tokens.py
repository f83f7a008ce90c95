"""Counting cl100k tokens, for the budget of the memories injected into a chat.

tiktoken's cl100k encoder is ~28 MB resident. A gateway needs it only for memories stored before
their line's count was stored with them (``Memory.line_tokens``, see mnemo.memory_line), so it is
imported and built on the first count, not when the counter is made: a gateway whose memories all
carry their count never loads it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

TOKEN_CACHE_SIZE = 8192


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


def estimate_tokens(text: str) -> int:
    """About 4 characters a token: what is counted when the encoder cannot be loaded."""
    return (len(text) + 3) // 4


class LazyTokenCounter:
    """cl100k token counts, the encoder loaded on the first count (by one thread, whichever of the
    event loop and the worker's threads asks first). ``exact`` says whether counts are cl100k's
    or estimates (when tiktoken or its encoding file is missing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encode: Callable[[str], int] | None = None
        self._exact = False
        # A user's memories come back request after request, so each line is encoded once
        # (8 us a line otherwise, about 0.1 ms of a chat that injects ten memories).
        self._cached = functools.lru_cache(maxsize=TOKEN_CACHE_SIZE)(self._count)

    def __call__(self, text: str) -> int:
        return self._cached(text)

    def load(self) -> None:
        """Load the encoder now (a process that will count anyway: mnemo up's worker)."""
        self._load()

    @property
    def loaded(self) -> bool:
        return self._encode is not None

    @property
    def exact(self) -> bool:
        self._load()
        return self._exact

    def _count(self, text: str) -> int:
        return self._load()(text)

    def _load(self) -> Callable[[str], int]:
        if self._encode is None:
            with self._lock:
                if self._encode is None:
                    self._encode, self._exact = load_cl100k()
        return self._encode


def build_token_counter() -> LazyTokenCounter:
    """A counter of its own (tests, benchmarks); the processes of Mnemo share ``CL100K``."""
    return LazyTokenCounter()


def load_cl100k() -> tuple[Callable[[str], int], bool]:
    """cl100k via tiktoken, reading the encoding file litellm bundles (no download), and True; a
    4-characters-per-token estimate and False when that file is not there."""
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin:
        os.environ.setdefault(
            "TIKTOKEN_CACHE_DIR", os.path.join(os.path.dirname(spec.origin), "litellm_core_utils", "tokenizers")
        )
    try:
        from tiktoken import _tiktoken  # type: ignore[attr-defined]
        from tiktoken_ext.openai_public import cl100k_base

        table = cl100k_base()
        # The encoder's core alone: tiktoken.Encoding would also keep the 100k ranks as a Python
        # dict for good (+17 MB); counting needs none of it. Plain text encoding, as
        # encode(text, disallowed_special=()) (tests/unit/test_tokens.py).
        encoder = _tiktoken.CoreBPE(table["mergeable_ranks"], table["special_tokens"], table["pat_str"])
        del table
    except Exception as exc:  # tiktoken would try the network without the bundled file
        logger.warning("tiktoken unavailable (%s); estimating tokens from characters", exc)
        return estimate_tokens, False
    logger.info("loaded the cl100k token encoder")

    def count(text: str) -> int:
        return len(encoder.encode_ordinary(text))

    return count, True


# The one counter of a process: the gateway's (for memories without a stored count) and the
# writers' (mnemo.memory_line), so a process that needs the encoder builds it once.
CL100K = LazyTokenCounter()

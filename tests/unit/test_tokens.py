from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from mnemo.tokens import build_token_counter, estimate_tokens


def test_build_token_counter_counts_tokens_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_token_counter must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    count = build_token_counter()
    assert count("") == 0
    assert 1 <= count("hello") <= 2
    assert count("hello world, " * 50) > count("hello world")
    assert count("<|endoftext|> <|im_start|>system") > 0  # special tokens are plain text, not errors
    assert count.exact  # cl100k's counts, not the estimate


def test_the_token_counter_counts_what_tiktokens_cl100k_encoding_counts() -> None:
    import tiktoken

    count, encoding = build_token_counter(), tiktoken.get_encoding("cl100k_base")
    for text in ["", "hello", "Caroline moved to Lisbon on 7 May 2023.", "<|endoftext|> x", "naïve café 🙂 " * 20]:
        assert count(text) == len(encoding.encode(text, disallowed_special=()))


def test_the_encoder_is_loaded_on_the_first_count_not_when_the_counter_is_made() -> None:
    probe = (
        "import sys\n"
        "from mnemo.tokens import build_token_counter\n"
        "import gateway.app, mnemo.memory_line\n"
        "count = build_token_counter()\n"
        "before = 'tiktoken' in sys.modules or count.loaded\n"
        "count('hello')\n"
        "print(before, 'tiktoken' in sys.modules and count.loaded and count.exact)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_without_tiktoken_counts_are_estimates_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken raises ImportError
    count = build_token_counter()
    assert count("a" * 40) == estimate_tokens("a" * 40) == 10
    assert not count.exact

"""Raw mode keeps statements, not questions or small talk (mnemo.raw_filter)."""

from __future__ import annotations

import pytest

from mnemo.raw_filter import is_statement, keep

STATEMENTS = [
    "My dog is called Pixel.",
    "I moved to Lisbon in March",
    "when I was ten I moved to Lisbon",  # a question word, but no question
    "Thanks! I start my new job on Monday.",  # small talk, then a fact
    "What a week. I finally finished my screenplay!",
    "I ran a marathon last week, can you believe it?",  # a question after a statement
    "Yes, Paris!",  # an answer, not small talk
    "I love you",
    "Remember that my sister Ana lives in Osaka",
    "3.5 km is my daily run",
]
NOT_STATEMENTS = [
    "What is my dog called?",
    "what is my dog called",  # no question mark, still a question
    "Do you know where I parked",
    "thanks!",
    "ok",
    "Thank you so much!",
    "Hey John!",  # a greeting with a name
    "Thanks, Melanie! Where did you take that photo?",
    "Wow, that's awesome! What inspired it?",
    "lol",
    ";)",
    "   ",
    "Sounds good. Talk to you later!",
]


@pytest.mark.parametrize("text", STATEMENTS)
def test_a_message_that_states_something_is_a_statement(text: str) -> None:
    assert is_statement(text)


@pytest.mark.parametrize("text", NOT_STATEMENTS)
def test_questions_greetings_thanks_and_acknowledgements_are_not(text: str) -> None:
    assert not is_statement(text)


def test_statements_keeps_the_statements_in_order_and_all_keeps_everything() -> None:
    texts = ["What is my dog called?", "My dog is called Pixel", "thanks!", "I live in Austin"]
    assert keep(texts, "statements") == ["My dog is called Pixel", "I live in Austin"]
    assert keep(texts, "all") == texts

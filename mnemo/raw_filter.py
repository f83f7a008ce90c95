"""Which user messages raw mode remembers: statements, not questions or small talk.

Without an extraction model every new user message used to become a memory, so "What is my dog
called?" was stored and later injected beside the real fact, and "thanks!" or "ok" were too. A
message is kept when at least one of its sentences states something: a sentence that is not a
question and not made only of greetings, thanks and acknowledgements. The rule is a heuristic on
purpose (no model, no download, microseconds per message); ``extraction.raw_filter: all`` keeps
every message as before.
"""

from __future__ import annotations

import re
from typing import Literal

RawFilter = Literal["statements", "all"]

# Sentence ends: . ! ? (and runs of them), or a line break. Decimal points ("3.5") stay inside.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# A sentence without "?" that still asks: "what is my dog called", "where do I live". Only a
# question word followed by an auxiliary counts, so "When I was ten I moved to Lisbon" is a statement.
_QUESTION_WORDS = frozenset({"what", "who", "whom", "whose", "where", "when", "why", "which", "how"})
_AUXILIARIES = frozenset(
    """is are was were am do does did can could will would should shall may might must have has had
    what's who's where's when's why's how's isn't aren't don't doesn't didn't""".split()
)
_LEADING_AUXILIARIES = frozenset({"do", "does", "did", "is", "are", "am", "can", "could", "would", "should", "shall"})
_PRONOUNS = frozenset({"i", "you", "we", "they", "he", "she", "it", "my", "your", "there", "this", "that"})
_FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "my", "me", "we", "we're", "we've", "our", "us"})
# Words a sentence of small talk is made of: greetings, thanks, acknowledgements, interjections.
_SMALL_TALK = frozenset(
    """hi hey hello hiya yo morning evening afternoon night good bye goodbye cya see you later soon
    thanks thank thx ty cheers appreciate it much so very a lot ok okay k kk alright right sure yes
    yeah yep yup no nope nah cool great awesome nice perfect fine wonderful amazing wow oh ah uh um
    hmm lol haha hahaha lmao omg gotcha got understood noted makes sense sounds that's that is
    all too agreed indeed exactly true absolutely definitely welcome np problem please sorry well
    done congrats congratulations glad happy love to hear for your from meet nice really super neat
    look looks guys long time talk""".split()
)
# Words that open a greeting or thanks addressed to someone: "Thanks, Melanie!", "Hey John!".
_ADDRESSING = frozenset(
    {"hi", "hey", "hello", "hiya", "yo", "bye", "goodbye", "thanks", "thank", "wow", "oh", "congrats"}
)
_NAME = re.compile(r"[A-Z][a-z]+")


def is_question(sentence: str) -> bool:
    if sentence.rstrip().endswith("?"):
        # "I ran a marathon last week, can you believe it?": a statement about the speaker with a
        # question tacked on. "Love the necklace, where is it from?" has no "I" and stays a question.
        head = sentence.rsplit(",", 1)[0] if "," in sentence else ""
        head_words = set(_WORD.findall(head.lower()))
        return not (head_words & _FIRST_PERSON) or _asks(head)
    return _asks(sentence)


def _asks(sentence: str) -> bool:
    words = _WORD.findall(sentence.lower())
    if len(words) < 2:
        return False
    first, second = words[0], words[1]
    if first in _QUESTION_WORDS and second in _AUXILIARIES:
        return True
    # "do you know where I parked" (no "?"): an auxiliary opening, then a pronoun.
    return first in _LEADING_AUXILIARIES and second in _PRONOUNS


def is_small_talk(sentence: str) -> bool:
    words = _WORD.findall(sentence.lower())
    unknown = [word for word in words if word not in _SMALL_TALK]
    if not unknown:
        return True  # no words at all (emoji, "...") is small talk too
    # One name after a greeting or thanks is still small talk; "Yes, Paris!" is an answer.
    names = set(_NAME.findall(sentence))
    return len(unknown) == 1 and words[0] in _ADDRESSING and unknown[0] != words[0] and unknown[0].capitalize() in names


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def is_statement(text: str) -> bool:
    """True when some sentence of ``text`` tells something: neither a question nor small talk."""
    return any(not is_question(s) and not is_small_talk(s) for s in sentences(text))


def keep(texts: list[str], rule: RawFilter) -> list[str]:
    """The messages raw mode stores under ``rule``."""
    if rule == "all":
        return texts
    return [text for text in texts if is_statement(text)]

"""Which speakers a query names, which one it is about, and the query with their names left out.

Imported conversations attribute each memory to a speaker (``metadata.speaker``). A question like
"What pets does Nate have?" is about what Nate said, which the speaker boost handles
(mnemo.store.hybrid); but the name is also part of the text searched by meaning, and in a
conversation where every memory is somebody's, the name pulls up whatever is most "about Nate" as a
whole: short messages addressed to him ("Way to go, Nate!"), not the ones that mention pets. So the
query is searched by meaning a second time with the names replaced by a stand-in ("What pets does
someone have?"), and the boost alone carries who is meant. Measured on the LOCOMO sample in
leave-one-conversation-out (bench/results/recall.md).

Names match as whole words, case-sensitively, like the boost: "Nate" in "Nate's", not in "Nates".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mnemo.models import ScoredMemory

# What a speaker's name becomes in the query searched by meaning, and "Nate's": words that read
# right as a subject, an object and a possessive. A constant, not a setting: bench/recall measures
# the alternatives it was chosen over ("they", "the user", nothing) in leave-one-out.
STAND_IN = ("someone", "someone's")
# Between the first two names, what makes them one subject ("Jon and Gina", "Jon's or Gina's").
_JOINED = re.compile(r"(?:'s|\u2019s|')?\s*(?:,|,?\s*(?:and|or|&))\s*", re.IGNORECASE)


def speakers_of(hits: Iterable[ScoredMemory]) -> set[str]:
    """The speakers (``metadata.speaker``) of the memories found."""
    return {s for hit in hits if isinstance(s := hit.memory.metadata.get("speaker"), str) and s.strip()}


def _name(speaker: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(speaker)}(?!\w)")


def named(query: str, speakers: Iterable[str]) -> list[str]:
    """The speakers the query names, in the order it first names them."""
    found = [(match.start(), s) for s in speakers if s.strip() and (match := _name(s).search(query))]
    return [speaker for _, speaker in sorted(found)]


def subject(query: str, speakers: Iterable[str]) -> str | None:
    """The speaker the query is about: the one it names, or, naming several, the first when the
    others come later in the sentence ("What did Jon say about Gina's store?" is about Jon). None
    when it names none, or starts with two joined as one subject ("What do Jon and Gina both like?")."""
    order = named(query, speakers)
    if len(order) < 2:
        return order[0] if order else None
    first, second = order[0], order[1]
    end_of_first = _name(first).search(query)
    start_of_second = _name(second).search(query)
    assert end_of_first is not None and start_of_second is not None
    between = query[end_of_first.end() : start_of_second.start()]
    return None if _JOINED.fullmatch(between) else first


def without_names(query: str, speakers: Sequence[str], stand_in: tuple[str, str] | None = None) -> str:
    """``query`` with each of ``speakers`` replaced by ``stand_in`` (word, possessive; default
    STAND_IN), spacing tidied. An empty stand-in leaves the names out."""
    word, possessive = STAND_IN if stand_in is None else stand_in
    text = query
    # Longest first, so "Mary Ann" goes before "Mary" would split it.
    for speaker in sorted(speakers, key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(speaker)}(?:('s|\u2019s)|(?!\w))")
        text = pattern.sub(lambda match: possessive if match.group(1) else word, text)
    return " ".join(text.split())


def content_query(query: str, hits: Iterable[ScoredMemory]) -> str | None:
    """The query to search by meaning again, without the names of the found memories' speakers it
    contains; None when it names none of them (then the first search stands)."""
    order = named(query, speakers_of(hits))
    if not order:
        return None
    content = without_names(query, order)
    return content if content and content != query else None

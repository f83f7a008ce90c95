"""Dates as keyword terms: a memory is found by the day or month it talks about.

"I watched it last night", said on 2022-05-02, is about 2022-05-01; a question "What did Joanna
watch on 1 May, 2022?" names that day. Neither text shares a word with the other, so both are
given synthetic terms for the keyword (BM25) side: ``day20220501`` and ``month202205`` for each date
a memory is dated or talks about (relative phrases resolved against the day it was said), and the
same terms for the dates a query names. A query naming "June" without a year gets ``monthof06``.
Nothing here is stored in the memory's text; only its keyword vector carries the terms.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
WEEKDAYS = {
    name: n for n, name in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "few": 3, "couple of": 2}

_MONTH = (
    r"(january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
)
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+(\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},?\s+(\d{{4}})\b", re.I)
# A month named alone, capitalised ("in June"): "may" only as "May", and not as a sentence's first word.
_MONTH_ALONE = re.compile(
    rf"(?<![.?!]\s)(?<!^)\b(?:in|of|during|since|until|by|early|late|mid|last|this)\s+{_MONTH}\b(?!\s*,?\s*\d)", re.I
)
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")

_NUMBER = r"(\d+|a|an|one|two|three|four|five|six|few|couple of)"
_AGO = re.compile(rf"\b{_NUMBER}\s+(day|week|month|year)s?\s+ago\b", re.I)
_LAST_WEEKDAY = re.compile(
    r"\b(?:last|on|this past)\s+(monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I
)
_FIXED = {
    "yesterday": -1,
    "last night": -1,
    "today": 0,
    "tonight": 0,
    "this morning": 0,
    "this afternoon": 0,
    "this evening": 0,
    "tomorrow": 1,
    "last week": -7,
    "a week ago": -7,
    "last weekend": -7,  # refined below to the Saturday before
    "next week": 7,
    "next weekend": 7,
}
_FIXED_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _FIXED), key=len, reverse=True)) + r")\b", re.I)
_LAST_MONTH = re.compile(r"\b(last|next) month\b", re.I)


def day_terms(day: date) -> list[str]:
    return [f"day{day:%Y%m%d}", f"month{day:%Y%m}", f"monthof{day:%m}"]


def _shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def mentioned_days(text: str, said_on: date) -> list[date]:
    """The days ``text`` talks about, relative phrases resolved against ``said_on``."""
    found: list[date] = []
    for match in _FIXED_RE.finditer(text):
        phrase = match.group(1).lower()
        if phrase == "last weekend":
            # The Saturday before the week the message was said in.
            found.append(said_on - timedelta(days=(said_on.weekday() - 5) % 7 or 7))
        else:
            found.append(said_on + timedelta(days=_FIXED[phrase]))
    for match in _LAST_WEEKDAY.finditer(text):
        back = (said_on.weekday() - WEEKDAYS[match.group(1).lower()]) % 7 or 7
        found.append(said_on - timedelta(days=back))
    for match in _AGO.finditer(text):
        raw, unit = match.group(1).lower(), match.group(2).lower()
        count = int(raw) if raw.isdigit() else NUMBERS.get(raw, 1)
        if unit == "day":
            found.append(said_on - timedelta(days=count))
        elif unit == "week":
            found.append(said_on - timedelta(days=7 * count))
        elif unit == "month":
            found.append(_shift_months(said_on, -count))
        elif count < 100:
            found.append(said_on.replace(year=said_on.year - count, day=min(said_on.day, 28)))
    for match in _LAST_MONTH.finditer(text):
        found.append(_shift_months(said_on, -1 if match.group(1).lower() == "last" else 1))
    return found


def document_terms(text: str, said_on: date) -> str:
    """Terms for a memory said on ``said_on``: its own day and the days it talks about."""
    terms: dict[str, None] = {}
    for day in [said_on, *mentioned_days(text, said_on)]:
        terms.update(dict.fromkeys(day_terms(day)))
    return " ".join(terms)


def _valid(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def query_terms(query: str) -> str:
    """Terms for the dates a query names: a day, a month of a year, or a month alone."""
    terms: list[str] = []
    taken: list[tuple[int, int]] = []
    for pattern, order in ((_DAY_MONTH_YEAR, "dmy"), (_MONTH_DAY_YEAR, "mdy")):
        for match in pattern.finditer(query):
            groups = dict(zip(order, match.groups(), strict=True))
            day = _valid(int(groups["y"]), MONTHS[groups["m"].lower()], int(groups["d"]))
            if day is not None:
                terms.append(f"day{day:%Y%m%d}")
                taken.append(match.span())
    for match in _ISO.finditer(query):
        day = _valid(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if day is not None:
            terms.append(f"day{day:%Y%m%d}")
    for match in _MONTH_YEAR.finditer(query):
        if not any(start <= match.start() < end for start, end in taken):
            terms.append(f"month{int(match.group(2)):04d}{MONTHS[match.group(1).lower()]:02d}")
    for match in _MONTH_ALONE.finditer(query):
        name = match.group(1)
        if name.lower() != "may" or name == "May":
            terms.append(f"monthof{MONTHS[name.lower()]:02d}")
    return " ".join(terms)

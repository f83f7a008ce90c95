"""Realistic short memory texts and the questions that find them, generated from templates.

Deterministic for a seed, so every target and every peer sees the same texts and queries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CITIES = ["Austin", "Denver", "Lisbon", "Osaka", "Toronto", "Nairobi", "Berlin", "Lima", "Seoul", "Oslo", "Perth"]
FOODS = ["sushi", "tacos", "ramen", "pho", "falafel", "paella", "dumplings", "curry", "pierogi", "ceviche"]
PETS = ["a dog named Biscuit", "two cats", "a parrot called Kiwi", "a beagle named Max", "a rabbit", "goldfish"]
JOBS = ["nurse", "data engineer", "teacher", "architect", "chef", "lawyer", "pilot", "designer", "pharmacist"]
HOBBIES = ["rock climbing", "chess", "baking sourdough", "trail running", "painting", "the violin", "birdwatching"]
PEOPLE = ["sister Ana", "brother Tom", "partner Sam", "friend Priya", "mother Rosa", "son Leo", "daughter Mia"]
ALLERGIES = ["peanuts", "shellfish", "gluten", "lactose", "penicillin", "cats", "pollen"]
LANGS = ["Python", "Rust", "Go", "TypeScript", "Kotlin", "Elixir", "Java"]
MONTHS = ["January", "March", "May", "July", "September", "November"]

FACTS = [
    ("I live in {city}", "Where do I live?"),
    ("I moved to {city} in {month}", "When did I move to {city}?"),
    ("My favourite food is {food}", "What food do I like best?"),
    ("I have {pet}", "What pets do I have?"),
    ("I work as a {job}", "What is my job?"),
    ("I spend weekends on {hobby}", "What do I do at weekends?"),
    ("I am allergic to {allergy}", "Am I allergic to anything?"),
    ("My {person} lives in {city}", "Where does my {person} live?"),
    ("I am learning {lang} this year", "Which programming language am I learning?"),
    ("I want to visit {city} in {month}", "Where do I want to travel?"),
    ("My {person} is turning {age} in {month}", "When is my {person}'s birthday?"),
    ("I prefer {food} over {food2} for dinner", "What should I cook tonight?"),
    ("I run {km} km every {day}", "How much do I run?"),
    ("I am vegetarian since {year}", "Do I eat meat?"),
    ("My flight to {city} leaves on {month} {age}", "When is my next flight?"),
]
DAYS = ["Monday", "Wednesday", "Saturday", "Sunday"]


@dataclass(frozen=True)
class Fact:
    user_id: str
    text: str
    question: str


def _values(rng: random.Random) -> dict[str, str]:
    return {
        "city": rng.choice(CITIES),
        "month": rng.choice(MONTHS),
        "food": rng.choice(FOODS),
        "food2": rng.choice(FOODS),
        "pet": rng.choice(PETS),
        "job": rng.choice(JOBS),
        "hobby": rng.choice(HOBBIES),
        "allergy": rng.choice(ALLERGIES),
        "person": rng.choice(PEOPLE),
        "lang": rng.choice(LANGS),
        "age": str(rng.randint(2, 80)),
        "km": str(rng.randint(3, 21)),
        "day": rng.choice(DAYS),
        "year": str(rng.randint(1995, 2025)),
    }


def user_facts(user_id: str, count: int, rng: random.Random) -> list[Fact]:
    facts = []
    for _ in range(count):
        template, question = rng.choice(FACTS)
        values = _values(rng)
        facts.append(Fact(user_id, template.format(**values), question.format(**values)))
    return facts


def corpus(users: int, total: int, seed: int = 7) -> list[Fact]:
    """``total`` facts spread evenly over ``users`` users (user ids ``u0000`` ...)."""
    rng = random.Random(seed)
    per_user, extra = divmod(total, users)
    facts: list[Fact] = []
    for number in range(users):
        facts += user_facts(f"u{number:04d}", per_user + (1 if number < extra else 0), rng)
    return facts


def unique_questions(count: int, seed: int = 11) -> list[str]:
    """Questions that never repeat (a numbered suffix), so no query cache can answer them."""
    rng = random.Random(seed)
    return [rng.choice(FACTS)[1].format(**_values(rng)) + f" (#{n})" for n in range(count)]

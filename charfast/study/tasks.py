"""Character-level tasks on words: the study's four (fixed) and CUTE-style ones.

A task turns a word into a question and its one correct answer. Each task has several
question templates and several answer templates; a rendered example pairs one of each at
random. The answer *value* (e.g. "3", "yrrebwarts") is what exact-match scores: a
generation is right when it reads as any of the task's answer templates filled with the
right value (see `extract_answer`).

Fixes over the study: count draws the letter uniformly from a-z (absent letters
included, so 0 is a common answer); replace replaces every occurrence, not the first;
index asks only about letters the word contains.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Example:
    task: str
    word: str
    question: str  # the prompt, ending where the answer starts
    answer: str  # the rendered answer text the model is trained to produce
    value: str  # the answer value inside it, what exact-match compares
    slots: tuple[tuple[str, str], ...] = ()  # the task's parameters, e.g. (("letter", "r"),)


@dataclass(frozen=True)
class Task:
    name: str
    # (word, rng) -> (template slots, answer value); slots fill the templates
    make: Callable[[str, random.Random], tuple[dict, str]]
    questions: tuple[str, ...]
    answers: tuple[str, ...]  # each holds "{value}" exactly once
    min_distinct_letters: int = 1  # delete and swap need two, or the answer is empty / the word itself

    def example(self, word: str, rng: random.Random) -> Example:
        slots, value = self.make(word, rng)
        question = rng.choice(self.questions).format(word=word, **slots)
        answer = rng.choice(self.answers).format(value=value, **slots)
        return Example(self.name, word, question + "\n", answer, value, tuple(sorted(slots.items())))


def _present_letter(word: str, rng: random.Random) -> str:
    return rng.choice(sorted(set(word)))


def _other_letter(exclude: str, rng: random.Random) -> str:
    return rng.choice([c for c in LETTERS if c not in exclude])


def _count(word, rng):
    letter = rng.choice(LETTERS)
    return {"letter": letter}, str(word.count(letter))


def _index(word, rng):
    letter = _present_letter(word, rng)
    return {"letter": letter}, str(word.index(letter))


def _reverse(word, rng):
    return {}, word[::-1]


def _replace(word, rng):
    letter = _present_letter(word, rng)
    other = _other_letter(letter, rng)
    return {"letter": letter, "other": other}, word.replace(letter, other)


def _spell(word, rng):
    return {}, " ".join(word)


def _spell_inverse(word, rng):
    return {"spelled": " ".join(word)}, word


def _contains(word, rng):
    # Half the questions ask about a present letter, so "yes" and "no" are balanced.
    absent = [c for c in LETTERS if c not in word]
    letter = rng.choice(absent) if absent and rng.random() < 0.5 else _present_letter(word, rng)
    return {"letter": letter}, "yes" if letter in word else "no"


def _insert(word, rng):
    after = _present_letter(word, rng)
    letter = rng.choice(LETTERS)
    return {"letter": letter, "after": after}, word.replace(after, after + letter)


def _delete(word, rng):
    letter = _present_letter(word, rng)
    return {"letter": letter}, word.replace(letter, "")


def _swap(word, rng):
    first, second = rng.sample(sorted(set(word)), 2)
    swapped = "".join(second if c == first else first if c == second else c for c in word)
    return {"first": first, "second": second}, swapped


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "count",
            _count,
            (
                "How many times does the letter '{letter}' appear in '{word}'?",
                "Count the occurrences of '{letter}' in the word '{word}'.",
                "In '{word}', how many '{letter}'s are there?",
                "Number of '{letter}' characters in '{word}'?",
            ),
            ("{value}", "The letter '{letter}' appears {value} times.", "Answer: {value}"),
        ),
        Task(
            "index",
            _index,
            (
                "At which 0-based position does '{letter}' first occur in '{word}'?",
                "Give the index (starting at 0) of the first '{letter}' in '{word}'.",
                "Where is the first '{letter}' in '{word}'? Count from 0.",
            ),
            ("{value}", "It is at index {value}.", "Answer: {value}"),
        ),
        Task(
            "reverse",
            _reverse,
            (
                "Reverse the letters of '{word}'.",
                "Write '{word}' backwards.",
                "What is '{word}' spelled in reverse order?",
            ),
            ("{value}", "Reversed: {value}", "Answer: {value}"),
        ),
        Task(
            "replace",
            _replace,
            (
                "Replace every '{letter}' in '{word}' with '{other}'.",
                "In '{word}', change each '{letter}' to '{other}'.",
                "Write '{word}' with all '{letter}'s turned into '{other}'s.",
            ),
            ("{value}", "Result: {value}", "Answer: {value}"),
        ),
        Task(
            "spell",
            _spell,
            (
                "Spell out '{word}' letter by letter.",
                "Spell the word '{word}'.",
                "What are the letters of '{word}'?",
            ),
            ("{value}", "Spelled: {value}", "Answer: {value}"),
        ),
        Task(
            "spell_inverse",
            _spell_inverse,
            (
                "Which word is spelled '{spelled}'?",
                "Join the letters '{spelled}' into a word.",
                "Put together: {spelled}",
            ),
            ("{value}", "The word is {value}.", "Answer: {value}"),
        ),
        Task(
            "contains",
            _contains,
            (
                "Does '{word}' contain the letter '{letter}'?",
                "Is there a '{letter}' in '{word}'?",
                "Answer yes or no: '{letter}' occurs in '{word}'.",
            ),
            ("{value}", "Answer: {value}"),
        ),
        Task(
            "insert",
            _insert,
            (
                "Add '{letter}' after every '{after}' in '{word}'.",
                "Insert the letter '{letter}' right after each '{after}' of '{word}'.",
                "In '{word}', put a '{letter}' after every '{after}'.",
            ),
            ("{value}", "Result: {value}", "Answer: {value}"),
        ),
        Task(
            "delete",
            _delete,
            (
                "Delete every '{letter}' from '{word}'.",
                "Remove all '{letter}'s in '{word}'.",
                "Write '{word}' without the letter '{letter}'.",
            ),
            ("{value}", "Result: {value}", "Answer: {value}"),
            min_distinct_letters=2,
        ),
        Task(
            "substitute",
            _replace,
            (
                "Substitute '{letter}' with '{other}' in '{word}'.",
                "Swap out each '{letter}' for '{other}' in '{word}'.",
                "Use '{other}' wherever '{word}' has '{letter}'.",
            ),
            ("{value}", "Result: {value}", "Answer: {value}"),
        ),
        Task(
            "swap",
            _swap,
            (
                "Swap the letters '{first}' and '{second}' everywhere in '{word}'.",
                "In '{word}', exchange every '{first}' with '{second}' and every '{second}' with '{first}'.",
                "Trade places of '{first}' and '{second}' in '{word}'.",
            ),
            ("{value}", "Result: {value}", "Answer: {value}"),
            min_distinct_letters=2,
        ),
    ]
}

STUDY_TASKS = ("reverse", "count", "index", "replace")


def make_example(task: str, word: str, rng: random.Random) -> Example:
    """One rendered example of `task` for a lower-case ASCII word."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if not word or not set(word) <= set(LETTERS):
        raise ValueError(f"task words must be non-empty lower-case a-z strings, got {word!r}")
    if len(set(word)) < TASKS[task].min_distinct_letters:
        raise ValueError(
            f"task {task!r} needs words with at least {TASKS[task].min_distinct_letters} distinct letters, got {word!r}"
        )
    return TASKS[task].example(word, rng)


def extract_answer(task: str, generated: str) -> str | None:
    """The answer value in a generation (its first line), read through any of the task's
    answer templates; None when it matches none of them."""
    line = generated.split("\n", 1)[0].strip()
    # Most specific template first: the bare "{value}" would swallow "Answer: 3" whole.
    for template in sorted(TASKS[task].answers, key=len, reverse=True):
        for value in _template_matches(template, line):
            return value
    return None


def _template_matches(template: str, line: str):
    # Slots other than {value} (the letter asked about, ...) match any short text.
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{value}"), "(?P<value>.+?)")
    pattern = re.sub(r"\\\{\w+\\\}", ".{1,3}", pattern)
    match = re.fullmatch(pattern, line)
    if match:
        yield match.group("value")


def is_exact_match(example: Example, generated: str) -> bool:
    return extract_answer(example.task, generated) == example.value

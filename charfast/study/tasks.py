"""Character-level tasks on words: the study's four (fixed) and CUTE-style ones.

A task turns a word into a question and its one correct answer. Each task has several
question templates and several answer templates; a rendered example pairs one of each at
random. The answer *value* (e.g. "3", "yrrebwarts") is what exact-match scores: a
generation is right when it reads as any of the task's answer templates filled with the
right value (see `extract_answer`).

Classification tasks (count, contains) have a fixed set of answer values, their
`classes`, and draw each class equally often: a constant answer then scores exactly
chance (`Task.chance`), and accuracy above it means the task is learned.

Fixes over the study: count asks about letters by the answer they give (0 to 3
occurrences, each equally likely; the study drew the letter from a-z, so 0 was the usual
answer); replace replaces every occurrence, not the first; index asks only about letters
the word contains.
"""

from __future__ import annotations

import itertools
import random
import re
import string
from collections.abc import Callable, Sequence
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
    # (word, rng, wanted value or None) -> (template slots, answer value); slots fill the
    # templates. Only classification tasks are given a wanted value (one of `classes`).
    make: Callable[[str, random.Random, str | None], tuple[dict, str]]
    questions: tuple[str, ...]
    answers: tuple[str, ...]  # each holds "{value}" exactly once
    min_distinct_letters: int = 1  # delete and swap need two, or the answer is empty / the word itself
    classes: tuple[str, ...] = ()  # a classification task's answer values, drawn equally often
    answerable: Callable[[str, str], bool] | None = None  # (word, class) -> can the word give that answer

    @property
    def chance(self) -> float:
        """Exact match of the best constant answer on a balanced set: 1 / classes, else 0."""
        return 1 / len(self.classes) if self.classes else 0.0

    def can_use(self, word: str, value: str | None = None) -> bool:
        if len(set(word)) < self.min_distinct_letters:
            return False
        return value is None or self.answerable is None or self.answerable(word, value)

    def example(self, word: str, rng: random.Random, value: str | None = None) -> Example:
        slots, value = self.make(word, rng, value)
        question = rng.choice(self.questions).format(word=word, **slots)
        answer = rng.choice(self.answers).format(value=value, **slots)
        return Example(self.name, word, question + "\n", answer, value, tuple(sorted(slots.items())))


def _present_letter(word: str, rng: random.Random) -> str:
    return rng.choice(sorted(set(word)))


def _other_letter(exclude: str, rng: random.Random) -> str:
    return rng.choice([c for c in LETTERS if c not in exclude])


def _letters_counted(word: str, value: str) -> list[str]:
    return [c for c in LETTERS if word.count(c) == int(value)]


def _count(word, rng, value):
    return {"letter": rng.choice(_letters_counted(word, value))}, value


def _index(word, rng, value):
    letter = _present_letter(word, rng)
    return {"letter": letter}, str(word.index(letter))


def _char_at(word, rng, value):
    position = rng.randrange(len(word))
    return {"position": str(position)}, word[position]


def _reverse(word, rng, value):
    return {}, word[::-1]


def _replace(word, rng, value):
    letter = _present_letter(word, rng)
    other = _other_letter(letter, rng)
    return {"letter": letter, "other": other}, word.replace(letter, other)


def _spell(word, rng, value):
    return {}, " ".join(word)


def _spell_inverse(word, rng, value):
    return {"spelled": " ".join(word)}, word


def _contains_letters(word: str, value: str) -> list[str]:
    return [c for c in LETTERS if (c in word) == (value == "yes")]


def _contains(word, rng, value):
    return {"letter": rng.choice(_contains_letters(word, value))}, value


def _insert(word, rng, value):
    after = _present_letter(word, rng)
    letter = rng.choice(LETTERS)
    return {"letter": letter, "after": after}, word.replace(after, after + letter)


def _delete(word, rng, value):
    letter = _present_letter(word, rng)
    return {"letter": letter}, word.replace(letter, "")


def _swap(word, rng, value):
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
            classes=("0", "1", "2", "3"),
            answerable=lambda word, value: bool(_letters_counted(word, value)),
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
            "char_at",
            _char_at,
            (
                "What is the letter at 0-based position {position} in '{word}'?",
                "Which letter of '{word}' is at index {position} (counting from 0)?",
                "In '{word}', what letter stands at position {position}, starting at 0?",
            ),
            ("{value}", "It is '{value}'.", "Answer: {value}"),
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
            classes=("yes", "no"),
            answerable=lambda word, value: bool(_contains_letters(word, value)),
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


def make_example(task: str, word: str, rng: random.Random, value: str | None = None) -> Example:
    """One rendered example of `task` for a lower-case ASCII word. A classification task
    answers `value` (default: a class drawn from those the word can give)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    spec = TASKS[task]
    if not word or not set(word) <= set(LETTERS):
        raise ValueError(f"task words must be non-empty lower-case a-z strings, got {word!r}")
    if not spec.can_use(word):
        raise ValueError(
            f"task {task!r} needs words with at least {spec.min_distinct_letters} distinct letters, got {word!r}"
        )
    if not spec.classes:
        if value is not None:
            raise ValueError(f"task {task!r} has no classes; value must be None, got {value!r}")
        return spec.example(word, rng)
    if value is None:
        value = rng.choice([c for c in spec.classes if spec.can_use(word, c)])
    if value not in spec.classes or not spec.can_use(word, value):
        raise ValueError(f"task {task!r}: {word!r} cannot have the answer {value!r} (classes: {spec.classes})")
    return spec.example(word, rng, value)


def sample_example(task: str, words: Sequence[str], rng: random.Random, max_tries: int = 10_000) -> Example:
    """An example of `task` on a random word of `words`; a classification task first draws
    its answer class uniformly, then a word that can give it, so its classes are balanced."""
    spec = TASKS[task]
    value = rng.choice(spec.classes) if spec.classes else None
    for _ in range(max_tries):
        word = rng.choice(words)
        if spec.can_use(word, value):
            return spec.example(word, rng, value)
    raise ValueError(
        f"task {task!r}: no word among {len(words)} tried {max_tries} times can be used (answer {value!r})"
    )


def draw_examples(task: str, words: Sequence[str], n: int, rng: random.Random) -> list[Example]:
    """Up to n examples of `task`, on distinct words of `words` in random order. A
    classification task's answers cycle through its classes and the list is cut to a
    multiple of them, so every class appears equally often (a frozen test set's rule)."""
    spec = TASKS[task]
    pool = [w for w in words if spec.can_use(w)]
    rng.shuffle(pool)
    wanted = itertools.cycle(spec.classes) if spec.classes else itertools.repeat(None)
    value, examples = next(wanted), []
    for word in pool:
        if len(examples) == n:
            break
        if spec.can_use(word, value):
            examples.append(spec.example(word, rng, value))
            value = next(wanted)
    if spec.classes:
        examples = examples[: len(examples) - len(examples) % len(spec.classes)]
    return examples


def answer_renderings(example: Example) -> list[str]:
    """Every answer text a model may write for `example`: each answer template filled with
    its value (the decoding budget must fit the longest)."""
    return [template.format(value=example.value, **dict(example.slots)) for template in TASKS[example.task].answers]


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

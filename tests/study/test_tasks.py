import random
import string

import numpy as np
import pytest

from charfast.study.tasks import STUDY_TASKS, TASKS, extract_answer, is_exact_match, make_example

WORDS = ["strawberry", "mississippi", "banana", "rhythm", "queue", "ab"]


def independent_answer(ex):
    """Each task's answer recomputed by a second method from the example's parameters."""
    word, slots = ex.word, dict(ex.slots)
    for value in slots.values():  # every parameter is stated in the question
        assert f"'{value}'" in ex.question or value in ex.question
    if ex.task == "count":
        return str(sum(1 for c in word if c == slots["letter"]))
    if ex.task == "index":
        return str(next(i for i, c in enumerate(word) if c == slots["letter"]))
    if ex.task == "reverse":
        return "".join(reversed(word))
    if ex.task in ("replace", "substitute"):
        assert slots["letter"] in word and slots["other"] != slots["letter"]
        return "".join(slots["other"] if c == slots["letter"] else c for c in word)
    if ex.task == "spell":
        return " ".join(list(word))
    if ex.task == "spell_inverse":
        return slots["spelled"].replace(" ", "")
    if ex.task == "contains":
        return "yes" if slots["letter"] in set(word) else "no"
    if ex.task == "insert":
        return "".join(c + slots["letter"] if c == slots["after"] else c for c in word)
    if ex.task == "delete":
        return "".join(c for c in word if c != slots["letter"])
    if ex.task == "swap":
        first, second = slots["first"], slots["second"]
        assert first != second and first in word and second in word
        return word.translate(str.maketrans(first + second, second + first))
    raise AssertionError(ex.task)


@pytest.mark.parametrize("task", list(TASKS))
def test_answers_are_correct(task):
    rng = random.Random(1)
    for word in WORDS * 20:
        if len(set(word)) < TASKS[task].min_distinct_letters:
            continue
        ex = make_example(task, word, rng)
        assert ex.value == independent_answer(ex), ex
        assert "{" not in ex.question + ex.answer, ex
        assert ex.question.endswith("\n") and ex.value in ex.answer


@pytest.mark.parametrize("task", list(TASKS))
def test_rendered_answers_score_as_exact_matches_and_wrong_ones_do_not(task):
    rng = random.Random(2)
    for word in WORDS:
        if len(set(word)) < TASKS[task].min_distinct_letters:
            continue
        ex = make_example(task, word, rng)
        assert is_exact_match(ex, ex.answer)
        assert is_exact_match(ex, ex.value + "\nwhatever follows")
        for template in TASKS[task].answers:  # any answer template counts
            assert (
                extract_answer(
                    task, template.format(value=ex.value, letter="q", other="z", after="x", first="a", second="b")
                )
                == ex.value
            )
        assert not is_exact_match(ex, ex.value + "x")
        assert not is_exact_match(ex, "")


def test_count_draws_absent_letters_and_uniformly():
    rng = random.Random(0)
    letters = []
    zeros = 0
    for _ in range(5200):
        ex = make_example("count", "strawberry", rng)
        letters.append(dict(ex.slots)["letter"])
        zeros += ex.value == "0"
    counts = np.array([letters.count(c) for c in string.ascii_lowercase])
    assert counts.min() > 120 and counts.max() < 280  # ~200 each
    assert zeros > 5200 * 0.6  # 19 of 26 letters are absent from "strawberry"


def test_index_asks_only_present_letters_and_contains_is_balanced():
    rng = random.Random(0)
    for _ in range(200):
        assert int(make_example("index", "rhythm", rng).value) < 6
    answers = [make_example("contains", "strawberry", rng).value for _ in range(400)]
    assert 150 < answers.count("yes") < 250


def test_generation_is_deterministic_for_a_seed():
    def draw(seed):
        rng = random.Random(seed)
        return [make_example(t, w, rng) for t in TASKS for w in WORDS if len(set(w)) >= 2]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_study_tasks_are_registered():
    assert set(STUDY_TASKS) <= set(TASKS)


@pytest.mark.parametrize(
    "task, word, match",
    [
        ("nope", "word", "unknown task"),
        ("reverse", "Word", "lower-case"),
        ("reverse", "", "lower-case"),
        ("swap", "aaa", "at least 2 distinct letters"),
        ("delete", "zz", "at least 2 distinct letters"),
    ],
)
def test_bad_task_input(task, word, match):
    with pytest.raises(ValueError, match=match):
        make_example(task, word, random.Random(0))

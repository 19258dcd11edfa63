import itertools
import random
from collections import Counter

import pytest

from charfast.study.tasks import (
    STUDY_TASKS,
    TASKS,
    answer_renderings,
    draw_examples,
    extract_answer,
    is_exact_match,
    make_example,
    sample_example,
)

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
    if ex.task == "char_at":
        return word[int(slots["position"])]
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


def test_count_asks_each_answer_class_by_a_letter_that_gives_it():
    rng = random.Random(0)
    for value in TASKS["count"].classes:
        for _ in range(50):
            ex = make_example("count", "bananas", rng, value=value)
            assert ex.value == value == str("bananas".count(dict(ex.slots)["letter"]))
    assert not TASKS["count"].can_use("stream", "2")  # no letter occurs twice
    with pytest.raises(ValueError, match="cannot have the answer '2'"):
        make_example("count", "stream", rng, value="2")
    with pytest.raises(ValueError, match="has no classes"):
        make_example("reverse", "rhythm", rng, value="2")


def test_index_asks_only_present_letters():
    rng = random.Random(0)
    for _ in range(200):
        assert int(make_example("index", "rhythm", rng).value) < 6


@pytest.mark.parametrize("task", ["count", "contains"])
def test_frozen_test_cells_are_balanced_so_a_constant_answer_scores_chance(task):
    base = ["strawberry", "mississippi", "banana", "rhythm", "queue", "letters", "bookkeeper", "abc"]
    words = [w + a + b for w in base for a, b in itertools.product("xyz", repeat=2)]  # 72 distinct words
    classes = TASKS[task].classes
    for n in (8, 12, 40, 41):
        examples = draw_examples(task, words, n, random.Random(n))
        assert len(examples) == n - n % len(classes)
        counts = Counter(ex.value for ex in examples)
        assert set(counts) == set(classes) and len(set(counts.values())) == 1, counts
        assert len({ex.word for ex in examples}) == len(examples)  # distinct words
        for value in classes:  # a constant answer is right exactly `chance` of the time
            assert counts[value] / len(examples) == pytest.approx(TASKS[task].chance)
    assert TASKS["count"].chance == 0.25 and TASKS["contains"].chance == 0.5 and TASKS["reverse"].chance == 0


@pytest.mark.parametrize("task", ["count", "contains"])
def test_training_examples_draw_each_class_equally_often(task):
    rng = random.Random(0)
    values = Counter(sample_example(task, WORDS, rng).value for _ in range(4000))
    expected = 4000 / len(TASKS[task].classes)
    assert set(values) == set(TASKS[task].classes)
    assert all(abs(v - expected) < 0.1 * expected for v in values.values()), values


def test_a_generative_cell_uses_distinct_words_and_skips_words_a_task_cannot_use():
    examples = draw_examples("swap", ["aaaa", "abab", "abcd", "zzz"], 10, random.Random(0))
    assert sorted(ex.word for ex in examples) == ["abab", "abcd"]


def test_every_answer_rendering_is_an_exact_match():
    ex = make_example("count", "banana", random.Random(0), value="3")
    renderings = answer_renderings(ex)
    assert len(renderings) == len(TASKS["count"].answers) and "The letter 'a' appears 3 times." in renderings
    assert all(is_exact_match(ex, text) for text in renderings)


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

"""The splits stage: a tokenizer's word splits (train / heldout / heldout_rare / nonce, from
the words and tokens of the training documents of seed 0's document split) and its test set
(the frozen task questions), and their readers for the fine-tunings.

Both are records: rebuilt when the tokenizer, the corpus or the split and test settings
changed, or a file of theirs is damaged; the fine-tunings only read them (one writer).
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.failures import RunFailed
from charfast.gpt.run import load_tokenizer
from charfast.gpt.run_data import corpus_and_tokenizer
from charfast.gpt.token_shards import tokenize_corpus
from charfast.gpt.tokenizer import tokenizer_identity
from charfast.study.presets import CURVE_SPLITS, SPLITS
from charfast.study.records import file_sha256, read_json, read_record, reusable, write_record
from charfast.study.tasks import Example, draw_examples
from charfast.study.words import MANIFEST, load_splits, make_splits, token_frequencies, word_counts
from charfast.study.words import freeze_splits as freeze_word_splits

if TYPE_CHECKING:
    from charfast.study.pipeline import Study

SPLITS_SEED = 0  # the document split whose training documents the word splits are made from


def freeze_splits(study: Study, tokenizer: str) -> Path:
    """The splits stage: a tokenizer's word splits and test set, frozen under its folder, or
    rebuilt when what they were built from changed (the tokenizer, the corpus, the split
    and test settings) or a file of theirs is damaged. Returns the test set's path. The
    tokenizer and corpus are the tokenizer's first run's; the words and token counts those
    of seed 0's training documents whichever seeds run, so that a study run in pieces (a
    seed per host or session) asks one test set."""
    pretrain_dir = study.layout.pretrain_dir(tokenizer, study.config.archs[0], study.config.seeds[0])
    splits_dir = study.layout.splits_dir(tokenizer)
    state = load_checkpoint(pretrain_dir / "ckpt.pt")
    identity = {"tokenizer": tokenizer, "tokenizer_identity": state["tokenizer"]}
    if "corpus_sha256" in state:  # splits frozen before checkpoints knew their corpus lack it
        identity["corpus_sha256"] = state["corpus_sha256"]
    made = None
    if study.config.seeds[0] != SPLITS_SEED:  # seed 0's tokenizer is not this run's
        made = _splits_corpus_and_tokenizer(study, state, pretrain_dir / "ckpt.pt")
        identity["tokenizer_identity"] = tokenizer_identity(made[2])
    if not _splits_frozen(splits_dir, identity):
        config, index, encoding = made or _splits_corpus_and_tokenizer(study, state, pretrain_dir / "ckpt.pt")
        tokens = tokenize_corpus(encoding, index, config.cache_dir, show_progress=False)["train"]
        token_counts = sum(token_frequencies(chunk, encoding.n_vocab) for chunk in tokens.chunks())  # pretraining's
        splits = make_splits(word_counts(index.split_documents(val=False)), encoding, token_counts, seed=0)
        freeze_word_splits(splits, splits_dir, meta=identity)
    splits, _ = load_splits(splits_dir)
    test_path = study.layout.test_set(tokenizer)
    built_from = _test_set_built_from(study, tokenizer)
    if reusable(test_path, built_from) is None:
        questions = [dict(split=s, **dataclasses.asdict(e)) for s, e in _draw_test_set(study, splits)]
        write_record(test_path, {"questions": questions}, built_from)
    return test_path


def _splits_corpus_and_tokenizer(study: Study, state: dict, ckpt: Path):
    """(the run's settings with seed SPLITS_SEED; the corpus index, its documents split by
    that seed; that split's tokenizer: for a bpe:N one, trained on its train documents or
    read from the cache), the corpus checked to be the one the run at `ckpt` (its
    checkpoint `state`) was trained on."""
    config, _ = load_tokenizer(state, ckpt, study.config.data)
    config = dataclasses.replace(config, seed=SPLITS_SEED)
    return (config, *corpus_and_tokenizer(config))


def _splits_frozen(splits_dir: Path, identity: dict) -> bool:
    """Whether `splits_dir` holds whole splits frozen from `identity` (a manifest of
    before the corpus was recorded matches on the rest); a damaged file says so."""
    manifest = read_json(splits_dir / MANIFEST)
    meta = manifest.get("meta", {}) if isinstance(manifest, dict) else {}
    if {k: meta.get(k, v) if k == "corpus_sha256" else meta.get(k) for k, v in identity.items()} != identity:
        return False
    try:
        load_splits(splits_dir)
    except ValueError as err:
        print(f"charfast.study: {err}; the splits are frozen again")
        return False
    return True


def _test_set_built_from(study: Study, tokenizer: str) -> dict:
    return {
        "splits_manifest_sha256": file_sha256(study.layout.splits_dir(tokenizer) / MANIFEST),
        "tasks": list(study.config.tasks),
        "examples_per_cell": study.preset.examples_per_cell,
        "test_seed": study.config.test_seed,
    }


def splits_and_test_set(study: Study, tokenizer: str):
    """(word splits, [(split, Example)]) of a tokenizer, as its splits stage froze them:
    read only (one writer per file); a RunFailed when they are missing, stale or damaged."""
    splits_dir = study.layout.splits_dir(tokenizer)
    saved = read_record(study.layout.test_set(tokenizer)) if (splits_dir / MANIFEST).exists() else None
    if not isinstance(saved, dict) or saved.get("built_from") != _test_set_built_from(study, tokenizer):
        raise RunFailed(f"the splits and test set of {tokenizer} are missing or stale: splits({tokenizer}) runs first")
    try:
        splits, _ = load_splits(splits_dir)
    except ValueError as err:  # a damaged file: the splits stage of a rerun freezes them again
        raise RunFailed(str(err)) from None
    test_set = [
        (row.pop("split"), Example(**{**row, "slots": tuple(map(tuple, row["slots"]))})) for row in saved["questions"]
    ]
    return splits, test_set


def _draw_test_set(study: Study, splits) -> list[tuple[str, Example]]:
    rng = random.Random(study.config.test_seed)
    return [
        (split, example)
        for split in SPLITS
        for task in study.config.tasks
        for example in draw_examples(task, getattr(splits, split), study.preset.examples_per_cell, rng)
    ]


def curve_questions(study: Study, test_set: list[tuple[str, Example]]) -> list[tuple[str, Example]]:
    """The learning curves' questions: the first curve_examples of each task on each
    CURVE_SPLITS split of the frozen test set (a prefix keeps count and contains balanced
    when curve_examples is a multiple of their classes)."""
    taken: dict[tuple[str, str], int] = defaultdict(int)
    chosen = []
    for split, example in test_set:
        key = (split, example.task)
        if split in CURVE_SPLITS and taken[key] < study.preset.curve_examples:
            taken[key] += 1
            chosen.append((split, example))
    return chosen

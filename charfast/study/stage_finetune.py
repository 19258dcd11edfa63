"""The finetune stage: one fine-tuning of a pretrained run's weights at one pretraining
step, scored on the frozen test set with a learning curve: "mixed" (all tasks at once,
from the pretrained weights; its weights are kept beside its results) or a solo task
alone (from the mixed weights). Reused only when built from the same start, test set and
settings, with the mixed weights as they were written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charfast.atomic import atomic_write
from charfast.gpt.failures import RunFailed
from charfast.gpt.run import LoadedRun
from charfast.gpt.tracking import TrackedRun, Trackers, parse_trackers
from charfast.study import stage_splits
from charfast.study.evaluate import evaluate_examples, summarize
from charfast.study.finetune import FinetuneConfig, finetune
from charfast.study.layout import MIXED
from charfast.study.records import file_sha256, reusable, verified, weights_digest, write_record

if TYPE_CHECKING:
    from charfast.study.pipeline import Study


def finetune_at(study: Study, tokenizer: str, arch: str, seed: int, step: int, finetuning: str) -> Path:
    """The finetune stage: results.json of one fine-tuning of a pretrained run's weights
    at pretraining `step`: MIXED (all tasks, from the pretrained weights; its weights are
    kept) or a solo task alone (from the mixed weights). Reused only when it was built
    from the same start (the pretrained weights' step and hash, or the mixed weights'
    hash), test set and settings."""
    splits, test_set = stage_splits.splits_and_test_set(study, tokenizer)
    ckpt = study.checkpoint_at(tokenizer, arch, seed, step)
    at = study.at(step)
    mixed_weights = study.layout.finetuned_weights(tokenizer, arch, seed, MIXED, at)
    config = finetune_config(study, finetuning, seed)
    mixed_record = study.layout.results(tokenizer, arch, seed, MIXED, at)
    if finetuning != MIXED and not mixed_weights.exists():
        raise RunFailed(f"{mixed_weights} is missing: the mixed fine-tuning runs first")
    if finetuning == MIXED:
        state, start = study.pretrained(ckpt)
    else:  # built from the mixed weights: the pretrained checkpoint is read only to run it
        state, start = None, {"after_mixed_weights_sha256": weights_digest(verified(mixed_weights, mixed_record))}
    built_from = {
        **start,
        "test_set_sha256": file_sha256(study.layout.test_set(tokenizer)),
        **settings_built_from(study, finetuning, seed),
    }
    path = study.layout.results(tokenizer, arch, seed, finetuning, at)
    written = [mixed_weights] if finetuning == MIXED else []
    if reusable(path, built_from, written) is not None:
        return path
    run = study.load_pretrained(ckpt, state)
    if finetuning != MIXED:
        run.model.load_state_dict(torch.load(mixed_weights, map_location=run.device, weights_only=True))
    if run.model.char_emb is not None:  # its weights change between the learning curve's points
        run.model.char_emb.inference_cache = False
    questions = [(split, example) for split, example in test_set if example.task in config.tasks]
    identity = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "finetuning": finetuning}
    identity["pretrain_step"] = step
    trackers = _trackers(study, path.parent, identity, config)
    try:
        record = _finetune_and_score(study, run, splits.train, questions, config, built_from["curve_steps"], trackers)
    finally:
        if trackers is not None:
            trackers.close()
    if finetuning == MIXED:  # before its results, which mark the fine-tuning finished
        with atomic_write(mixed_weights) as f:
            torch.save(run.model.state_dict(), f)
    write_record(path, {**identity, **record}, built_from, written)
    return path


def finetune_config(study: Study, finetuning: str, seed: int) -> FinetuneConfig:
    mixed = finetuning == MIXED
    return FinetuneConfig(
        tasks=study.config.tasks if mixed else (finetuning,),
        steps=study.preset.finetune_steps if mixed else study.preset.solo_steps,
        batch_size=study.preset.finetune_batch,
        lr=study.preset.finetune_lr,
        seed=seed,
    )


def _trackers(study: Study, folder: Path, identity: dict, config: FinetuneConfig) -> Trackers | None:
    """A fine-tuning's trackers (--log), logging into `folder`; None without --log."""
    if not study.config.log:
        return None
    name = "{tokenizer} {arch} seed{seed} step{pretrain_step} {finetuning}".format(**identity)
    settings = {**identity, **dataclasses.asdict(config)}
    names = parse_trackers(study.config.log)
    return Trackers(names, TrackedRun(folder, settings, name=name, project=study.config.wandb_project))


def settings_built_from(study: Study, finetuning: str, seed: int) -> dict:
    """The part of a fine-tuning's built_from that its settings make (not its weights or
    test set): its FinetuneConfig and the learning curve's steps and questions."""
    config = finetune_config(study, finetuning, seed)
    points = study.preset.curve_points
    return {
        "finetune": json.loads(json.dumps(dataclasses.asdict(config))),  # as JSON gives it back
        "curve_steps": sorted({round(k * config.steps / points) for k in range(1, points + 1)}),
        "curve_examples": study.preset.curve_examples,
    }


def _finetune_and_score(
    study: Study, run: LoadedRun, words, questions, config: FinetuneConfig, curve_steps: list[int], trackers
) -> dict:
    """Fine-tune run.model in place, scoring a prefix of `questions` at step 0 and at
    `curve_steps` (the learning curve), then score all of them: the results.json fields
    of one fine-tuning. The losses and the curve's exact matches go to `trackers` too."""
    model, encoding, device = run.model, run.encoding, run.device
    curve_questions = stage_splits.curve_questions(study, questions)

    def curve_point(step: int) -> dict:
        scores = summarize(evaluate_examples(model, encoding, curve_questions, device=device))
        point = {
            "step": step,
            "exact_match": {f"{task}|{split}": v["exact_match"] for (task, split), v in scores.items()},
        }
        if trackers is not None:
            trackers.log(step, {f"exact_match/{cell}": v for cell, v in point["exact_match"].items()})
        return point

    def on_step(record: dict) -> None:
        if trackers is not None:
            trackers.metrics(record)
        if record["step"] in curve_steps:
            curve.append(curve_point(record["step"]))

    curve = [curve_point(0)]
    losses = finetune(model, encoding, list(words), config, device=device, on_step=on_step)
    after = evaluate_examples(model, encoding, questions, device=device)
    return {
        "n_vocab": encoding.n_vocab,
        "finetune": dataclasses.asdict(config),
        "finetune_curve": losses,
        "learning_curve": curve,
        "after": [dataclasses.asdict(r) for r in after],
    }

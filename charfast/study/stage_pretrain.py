"""The pretrain stage: one pretraining trajectory of the study (a charfast.train run, run by
run_training from the preset's settings), its weights kept at the preset's kept steps on
the way.

An existing run is continued or reused only when its settings and its corpus (by content)
are the ones asked for: another preset's or another corpus's run is refused, naming the
folder. A damaged checkpoint is set aside as ckpt.pt.damaged and the run trained again;
kept weights are records of their own (kept/step<N>.pt beside kept/step<N>.json).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from charfast.atomic import atomic_write
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.config import TrainConfig, computed_settings
from charfast.gpt.failures import Interrupted, RunFailed, describe_os_error
from charfast.gpt.run import run_training
from charfast.study.records import reusable, write_record

if TYPE_CHECKING:
    from charfast.study.pipeline import Study


def pretrain(study: Study, tokenizer: str, arch: str, seed: int) -> Path:
    """The pretraining run's folder, trained (or finished) to the preset's steps, its
    weights kept at each of the preset's kept steps on the way. An existing checkpoint is
    continued or reused only when its settings and corpus are the ones asked for here; a
    damaged one is set aside and the run trained again."""
    folder = study.layout.pretrain_dir(tokenizer, arch, seed)
    config = pretraining_config(study, tokenizer, arch, seed)
    state = _check_same_pretraining(study, folder, config)
    at = None if state is None else state["step"]  # the step folder/ckpt.pt holds, as the run goes on
    for step in study.preset.kept_steps:
        at = _keep_checkpoint(study, tokenizer, arch, seed, step, config, at)
    _train_to(folder, config, study.preset.pretrain_steps, at)
    return folder


def pretraining_config(study: Study, tokenizer: str, arch: str, seed: int) -> TrainConfig:
    """A pretraining's settings (the preset's over TrainConfig's defaults), but for out_dir
    and max_steps, which each segment of the run sets."""
    settings = {**study.preset.train, "tokenizer": tokenizer, "arch": arch, "seed": seed, "data": study.config.data}
    settings |= {"device": study.config.device, "sample_tokens": 0, "progress": False}
    if study.config.log:  # run control: in no record's built_from
        settings |= {"log": study.config.log, "wandb_project": study.config.wandb_project}
        settings["wandb_run_name"] = f"{tokenizer} {arch} seed{seed} pretrain"
    if study.preset.kept_steps:  # the same schedule whichever step a segment of the run stops at
        settings["lr_decay_steps"] = study.preset.pretrain_steps
    return TrainConfig(**settings)


def _check_same_pretraining(study: Study, folder: Path, config: TrainConfig) -> dict | None:
    """The checkpoint in `folder`, verified (None when there is none, or it was damaged and
    set aside: the run trains again); a ValueError when its pretraining computes something
    other than a fresh run of `config` would (e.g. another preset's model, or another corpus
    under the same path): it is never continued or reused. The corpus is compared by
    content where the checkpoint records it (else, for an older one, by path)."""
    state = _set_aside_if_damaged(folder / "ckpt.pt")
    if state is None:
        return None
    wanted = computed_settings(config)
    saved = state["config"]
    by_content = "corpus_sha256" in state
    differ = [
        f"{k} {saved.get(k)!r} there, {v!r} here"
        for k, v in wanted.items()
        if saved.get(k) != v and not (by_content and k == "data")
    ]
    if by_content:
        if state["corpus_sha256"] != study.corpus_digest():
            differ.append(
                f"its corpus (content SHA-256 {state['corpus_sha256'][:12]}...) is not the one --data holds "
                f"now ({study.corpus_digest()[:12]}...)"
            )
    if differ:
        raise ValueError(
            f"--out-dir {study.config.out_dir}: {folder} holds a pretraining with other settings "
            f"({'; '.join(differ)}), e.g. from another preset or corpus; choose another --out-dir, or remove "
            "that folder to pretrain it again"
        )
    return state


def _set_aside_if_damaged(ckpt: Path) -> dict | None:
    """The checkpoint at `ckpt`, verified (None when there is none). One that cannot be
    read, or whose content no longer matches its digest, is renamed to ckpt.pt.damaged
    (kept, never deleted), saying so in one line: its run trains again."""
    if not ckpt.exists():
        return None
    try:
        return load_checkpoint(ckpt)
    except CheckpointError as err:
        aside = ckpt.with_name(ckpt.name + ".damaged")
        ckpt.replace(aside)
        reason = str(err).removeprefix(f"checkpoint {ckpt} ").removeprefix("is ")
        print(f"charfast.study: {ckpt} is damaged ({reason}); set aside as {aside.name}, the run trains again")
        return None


def _keep_checkpoint(
    study: Study, tokenizer: str, arch: str, seed: int, step: int, config: TrainConfig, at: int | None
) -> int | None:
    """The pretraining's weights at `step`, kept as their own stage (its record says what
    run and step they are): taken on the way when the run (whose checkpoint holds step
    `at`, None: none yet) has not passed `step`, else from a run of its own to `step` (the
    same numbers: runs are deterministic and the schedule is the whole run's). Returns the
    step the run's checkpoint holds then."""
    kept = study.layout.kept_checkpoint(tokenizer, arch, seed, step)
    record_path = kept.with_suffix(".json")
    built_from = {"pretraining": portable_settings(study, config), "step": step}
    if reusable(record_path, built_from, [kept]) is not None:
        return at
    passed = at is not None and at > step
    if passed:  # a run of its own, continued where a killed earlier try of it stopped
        source = kept.parent / f"run-to-step{step}"
        leftover = _set_aside_if_damaged(source / "ckpt.pt")
        _train_to(source, config, step, None if leftover is None else leftover["step"])
    else:
        source = study.layout.pretrain_dir(tokenizer, arch, seed)
        at = _train_to(source, config, step, at)
    with atomic_write(kept) as f:
        f.write((source / "ckpt.pt").read_bytes())
    if passed:
        shutil.rmtree(source)
    write_record(record_path, {}, built_from, [kept])
    return at


def _train_to(folder: Path, config: TrainConfig, steps: int, at: int | None) -> int:
    """Train (or continue) the run in `folder`, whose checkpoint holds step `at` (None: no
    checkpoint), to `steps`; nothing when it is there. Returns the step it holds then."""
    if at is not None and at >= steps:
        return at
    config = dataclasses.replace(config, out_dir=str(folder), max_steps=steps, resume=at is not None)
    try:
        code = run_training(config)
    except Interrupted:  # a signal: the study stops, as the run did
        raise
    except (ValueError, CheckpointError, RunFailed) as err:
        raise RunFailed(f"pretraining {folder} failed: {err}") from err
    except OSError as err:
        raise RunFailed(f"pretraining {folder} failed: {describe_os_error(err)}") from err
    if code >= 128:
        raise Interrupted(f"pretraining {folder} was interrupted; run the study again to continue", code - 128)
    reached = load_checkpoint(folder / "ckpt.pt")["step"]
    if reached < steps:
        raise RunFailed(f"pretraining {folder} stopped at step {reached} of {steps}")
    return reached


def portable_settings(study: Study, config: TrainConfig) -> dict:
    """A pretraining's computed settings as a record holds them: the corpus by its digest,
    not by the path a node mounts it at."""
    return {**computed_settings(config), "data": study.corpus_digest()}

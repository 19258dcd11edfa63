"""The pretrain stage: one pretraining trajectory of the study (a charfast.train run), its
weights kept at the preset's kept steps on the way.

An existing run is continued or reused only when its settings and its corpus (by content)
are the ones asked for: another preset's or another corpus's run is refused, naming the
folder. A damaged checkpoint is set aside as ckpt.pt.damaged and the run trained again;
kept weights are records of their own (kept/step<N>.pt beside kept/step<N>.json).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from charfast.atomic import atomic_write
from charfast.gpt import train
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.config import computed_settings, settings_from_flags
from charfast.gpt.failures import Interrupted, RunFailed
from charfast.study.records import reusable, write_record

if TYPE_CHECKING:
    from charfast.study.pipeline import Study


def pretrain(study: Study, tokenizer: str, arch: str, seed: int) -> Path:
    """The pretraining run's folder, trained (or finished) to the preset's steps, its
    weights kept at each of the preset's kept steps on the way. An existing checkpoint is
    continued or reused only when its settings and corpus are the ones asked for here; a
    damaged one is set aside and the run trained again."""
    folder = study.layout.pretrain_dir(tokenizer, arch, seed)
    flags = _pretrain_flags(study, tokenizer, arch, seed)
    state = _check_same_pretraining(study, folder, flags)
    at = None if state is None else state["step"]  # the step folder/ckpt.pt holds, as the run goes on
    for step in study.preset.kept_steps:
        at = _keep_checkpoint(study, tokenizer, arch, seed, step, flags, at)
    _train_to(folder, flags, study.preset.pretrain_steps, at)
    return folder


def _pretrain_flags(study: Study, tokenizer: str, arch: str, seed: int) -> list[str]:
    """charfast.train's flags of a pretraining, but for --out-dir and --max-steps."""
    flags = [*study.preset.train_flags, "--tokenizer", tokenizer, "--arch", arch, "--seed", str(seed)]
    flags += ["--device", study.config.device, "--sample-tokens", "0", "--no-progress"]
    if study.config.log:  # run control: in no record's built_from
        flags += ["--log", study.config.log, "--wandb-project", study.config.wandb_project]
        flags += ["--wandb-run-name", f"{tokenizer} {arch} seed{seed} pretrain"]
    if study.preset.kept_steps:  # the same schedule whichever step a segment of the run stops at
        flags += ["--lr-decay-steps", str(study.preset.pretrain_steps)]
    return flags + (["--data", study.config.data] if study.config.data else [])


def _check_same_pretraining(study: Study, folder: Path, flags: list[str]) -> dict | None:
    """The checkpoint in `folder`, verified (None when there is none, or it was damaged and
    set aside: the run trains again); a ValueError when its pretraining computes something
    other than a fresh run of `flags` would (e.g. another preset's model, or another corpus
    under the same path): it is never continued or reused. The corpus is compared by
    content where the checkpoint records it (else, for an older one, by path)."""
    state = _set_aside_if_damaged(folder / "ckpt.pt")
    if state is None:
        return None
    wanted = computed_settings(settings_from_flags(flags)[0])
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
    study: Study, tokenizer: str, arch: str, seed: int, step: int, flags: list[str], at: int | None
) -> int | None:
    """The pretraining's weights at `step`, kept as their own stage (its record says what
    run and step they are): taken on the way when the run (whose checkpoint holds step
    `at`, None: none yet) has not passed `step`, else from a run of its own to `step` (the
    same numbers: runs are deterministic and the schedule is the whole run's). Returns the
    step the run's checkpoint holds then."""
    kept = study.layout.kept_checkpoint(tokenizer, arch, seed, step)
    record_path = kept.with_suffix(".json")
    built_from = {"pretraining": _portable(study, flags), "step": step}
    if reusable(record_path, built_from, [kept]) is not None:
        return at
    passed = at is not None and at > step
    if passed:  # a run of its own, continued where a killed earlier try of it stopped
        source = kept.parent / f"run-to-step{step}"
        leftover = _set_aside_if_damaged(source / "ckpt.pt")
        _train_to(source, flags, step, None if leftover is None else leftover["step"])
    else:
        source = study.layout.pretrain_dir(tokenizer, arch, seed)
        at = _train_to(source, flags, step, at)
    with atomic_write(kept) as f:
        f.write((source / "ckpt.pt").read_bytes())
    if passed:
        shutil.rmtree(source)
    write_record(record_path, {}, built_from, [kept])
    return at


def _train_to(folder: Path, flags: list[str], steps: int, at: int | None) -> int:
    """Train (or continue) the run in `folder`, whose checkpoint holds step `at` (None: no
    checkpoint), to `steps`; nothing when it is there. Returns the step it holds then."""
    ckpt = folder / "ckpt.pt"
    flags = [*flags, "--out-dir", str(folder), "--max-steps", str(steps)]
    if at is not None:
        if at >= steps:
            return at
        flags.append("--resume")
    code = train.main(flags)
    if code >= 128:
        raise Interrupted(f"pretraining {folder} was interrupted; run the study again to continue", code - 128)
    if code != 0:
        raise RunFailed(f"pretraining {folder} failed (exit {code}; see the message above)")
    reached = load_checkpoint(ckpt)["step"]
    if reached < steps:
        raise RunFailed(f"pretraining {folder} stopped at step {reached} of {steps}")
    return reached


def _portable(study: Study, flags: list[str]) -> dict:
    """A pretraining's computed settings as a record holds them: the corpus by its digest,
    not by the path a node mounts it at."""
    settings = computed_settings(settings_from_flags([*flags, "--out-dir", "-"])[0])
    return {**settings, "data": study.corpus_digest()}

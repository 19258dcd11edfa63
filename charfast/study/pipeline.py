"""The character-task study's stages, for every tokenizer, seed and arch.

For each tokenizer, seed and architecture (char vs the parameter-matched baseline):

    pretrain    python -m charfast.train on the corpus (resumed if interrupted)
    splits      words of the corpus split into train / heldout / heldout_rare / nonce,
                frozen once per tokenizer (charfast.study.words)
    test set    a fixed, seeded set of task examples per task and split, frozen once
    probe       linear spelling probes on the pretrained model's input vectors
    fine-tune   the pretrained model on task examples of train words, loss on answers only:
                "mixed" (all tasks at once), then for each of the preset's solo tasks the
                mixed model further on that task alone
    evaluate    greedy exact match and teacher-forced answer loss on the test set

Every stage writes its result into the output folder with what it was built from (the
pretraining's step and a digest of its weights, the frozen splits, the test set, the settings), and
is reused only when those inputs are still the same, so an interrupted study continues
where it stopped and a changed input is never silently mixed in (the folders:
charfast.study.layout). The report (charfast.study.report) then compares the archs per
task and split with paired bootstrap intervals over the shared test questions, averaged
over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from charfast.atomic import atomic_write, remove_stale_temp_files
from charfast.gpt import archs as gpt_archs
from charfast.gpt import train
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.config import computed_settings, resolve_config, settings_from_flags
from charfast.gpt.data import corpus_digest, load_documents, split_documents, tokenize
from charfast.gpt.distributed import resolve_device
from charfast.gpt.failures import Interrupted, RunFailed
from charfast.gpt.run import LoadedRun, load_run, load_tokenizer
from charfast.gpt.tokenizer import check_tokenizer_name
from charfast.gpt.tracking import Trackers, parse_trackers
from charfast.study.evaluate import evaluate_examples, summarize
from charfast.study.finetune import FinetuneConfig, finetune
from charfast.study.layout import MIXED, StudyLayout
from charfast.study.probe import probe_model
from charfast.study.records import (
    file_sha256,
    model_digest,
    read_json,
    read_record,
    reusable,
    verified,
    weights_digest,
    write_record,
)
from charfast.study.stages import Stage, study_stages
from charfast.study.tasks import TASKS, Example, draw_examples
from charfast.study.words import MANIFEST, freeze_splits, load_splits, make_splits, token_frequencies, word_counts

ARCHS = (gpt_archs.treatment(), *gpt_archs.controls())  # the study's default: the treatment and its controls
SPLITS = ("train", "heldout", "heldout_rare", "nonce")
CURVE_SPLITS = ("train", "heldout", "nonce")  # learning curves: heldout_rare is too small to draw from
SMALL_TASKS = ("spell", "spell_inverse", "contains", "count")  # learnable at CPU scale


@dataclass(frozen=True)
class Preset:
    tokenizers: tuple[str, ...]  # the vocabulary sweep
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    pretrain_steps: int
    train_flags: tuple[str, ...]  # charfast.train flags of the pretraining (model shape, batch)
    finetune_steps: int  # of the mixed fine-tuning
    solo_tasks: tuple[str, ...]  # fine-tuned further alone after the mixed fine-tuning: hard tasks
    solo_steps: int  # of each solo fine-tuning
    finetune_batch: int
    finetune_lr: float
    examples_per_cell: int  # frozen test questions per task and split
    curve_points: int  # evaluations during fine-tuning (learning curves), besides step 0
    curve_examples: int  # questions per task and split at each curve point (a prefix of the test set)
    archs: tuple[str, ...] = ARCHS
    # Pretraining steps before the last at which its weights are kept and probed and
    # fine-tuned too (the pretraining-length axis); their learning-rate schedule is the
    # whole run's (--lr-decay-steps pretrain_steps), whichever steps are kept.
    kept_steps: tuple[int, ...] = ()

    def __post_init__(self):
        if list(self.kept_steps) != sorted(set(self.kept_steps)) or any(
            not 0 < k < self.pretrain_steps for k in self.kept_steps
        ):
            raise ValueError(
                f"Preset: kept_steps must rise strictly inside (0, {self.pretrain_steps}), got {self.kept_steps}"
            )

    @property
    def pretrain_points(self) -> tuple[int, ...]:
        """Every pretraining step whose weights the later stages start from, the last one last."""
        return (*self.kept_steps, self.pretrain_steps)


PRESETS = {
    # Every stage in minutes on a 2-core CPU, with a tiny model: for tests and a first look.
    "quick": Preset(
        tokenizers=("bpe:300", "bpe:512"),
        seeds=(0, 1),
        tasks=SMALL_TASKS,
        pretrain_steps=20,
        train_flags=(
            *("--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--char-dim", "16", "--char-hidden", "16"),
            *("--block-size", "96", "--batch-size", "8", "--eval-interval", "10", "--eval-iters", "1"),
        ),
        finetune_steps=20,
        solo_tasks=("count",),
        solo_steps=20,
        finetune_batch=8,
        finetune_lr=1e-3,
        examples_per_cell=4,
        curve_points=2,
        curve_examples=4,
        kept_steps=(5, 10),
    ),
    # About 90 minutes on a 2-core CPU with --jobs 2: the default CPU model, three
    # vocabularies, two seeds, fine-tuned on four tasks long enough to learn most of them,
    # then on count alone (which mixed fine-tuning leaves near chance).
    "small": Preset(
        tokenizers=("bpe:512", "bpe:4096", "bpe:8192"),
        seeds=(0, 1),
        tasks=SMALL_TASKS,
        pretrain_steps=200,
        train_flags=("--eval-interval", "50", "--eval-iters", "4"),
        finetune_steps=3000,
        solo_tasks=("count",),
        solo_steps=2000,
        finetune_batch=32,
        finetune_lr=1e-3,
        examples_per_cell=60,
        curve_points=6,
        curve_examples=20,
    ),
    # Does the baseline learn spelling with 16x the small preset's pretraining? One vocabulary,
    # char against baseline-matched, 2 seeds, pretrained 3200 steps with its weights kept at
    # 200 (the small preset's length), 800 and 3200, each then probed and fine-tuned as the
    # small preset does (mixed 3000 steps, count alone 2000). About 2 hours on a 2-core CPU
    # with --jobs 2 (traded for it: bpe:512 and 8192, the char-shuffled control, a third seed).
    "length": Preset(
        tokenizers=("bpe:4096",),
        seeds=(0, 1),
        tasks=SMALL_TASKS,
        pretrain_steps=3200,
        train_flags=("--eval-interval", "100", "--eval-iters", "4"),
        finetune_steps=3000,
        solo_tasks=("count",),
        solo_steps=2000,
        finetune_batch=32,
        finetune_lr=1e-3,
        examples_per_cell=60,
        curve_points=6,
        curve_examples=20,
        archs=("char", "baseline-matched"),
        kept_steps=(200, 800),
    ),
    # GPU: GPT-2 small shape (bring a big corpus with --data).
    "full": Preset(
        tokenizers=("bpe:512", "bpe:4096", "cl100k_base"),
        seeds=(0, 1, 2),
        tasks=tuple(TASKS),
        pretrain_steps=20000,
        train_flags=("--preset", "gpt2-small", "--block-size", "256"),
        finetune_steps=3000,
        solo_tasks=(),
        solo_steps=0,
        finetune_batch=64,
        finetune_lr=3e-5,
        examples_per_cell=500,
        curve_points=10,
        curve_examples=100,
    ),
}


@dataclass
class StudyConfig:
    """Settings left None take the preset's value."""

    out_dir: str = "study"
    preset: str = "small"
    tokenizers: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    archs: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    solo_tasks: tuple[str, ...] | None = None
    data: str | None = None
    device: str = "auto"
    jobs: int = 1
    engine: str = "local"  # or "ray" (charfast.study.ray_engine): the device is then the cluster's to check
    log: str = ""  # experiment trackers of every training stage (charfast.gpt.tracking); no stage's identity
    wandb_project: str = "charfast"
    test_seed: int = 1234

    def resolved(self) -> StudyConfig:
        """This config with the preset's values in place of every None (an unknown preset is
        left for validate() to name). The preset's solo tasks are kept where they are among
        the tasks, and only when there are several tasks (one task is already trained alone)."""
        preset = PRESETS.get(self.preset)
        if preset is None:
            return self
        tasks = preset.tasks if self.tasks is None else tuple(self.tasks)
        solo_tasks = tuple(t for t in preset.solo_tasks if t in tasks and len(tasks) > 1)
        return dataclasses.replace(
            self,
            tokenizers=preset.tokenizers if self.tokenizers is None else tuple(self.tokenizers),
            archs=preset.archs if self.archs is None else tuple(self.archs),
            seeds=preset.seeds if self.seeds is None else tuple(self.seeds),
            tasks=tasks,
            solo_tasks=solo_tasks if self.solo_tasks is None else tuple(self.solo_tasks),
        )

    def validate(self) -> None:
        """Every setting, before any stage runs: a ValueError naming the flag."""
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for flag, values, known in (("--tasks", self.tasks, TASKS), ("--archs", self.archs, gpt_archs.names())):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"{flag} must name some of {', '.join(known)}; unknown: {unknown}")
            if len(set(values)) != len(values):
                raise ValueError(f"{flag} names one twice: {list(values)}")
        outside = [t for t in self.solo_tasks if t not in self.tasks]
        if outside or len(set(self.solo_tasks)) != len(self.solo_tasks):
            raise ValueError(f"--solo-tasks must name some of --tasks, each once; not among them: {outside}")
        if self.solo_tasks and len(self.tasks) == 1:
            raise ValueError("--solo-tasks: with a single task the mixed fine-tuning already trains it alone")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be integers >= 0, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.tokenizers)) != len(self.tokenizers):
            raise ValueError("--seeds and --tokenizers must not repeat a value")
        if not self.tokenizers:
            raise ValueError("--tokenizers needs at least one tokenizer")
        for tokenizer in self.tokenizers:
            check_tokenizer_name(tokenizer)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"--jobs must be an integer >= 1, got {self.jobs!r}")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"--data: {self.data} does not exist")
        if not self.out_dir.strip():
            raise ValueError(f"--out-dir must name a folder, got {self.out_dir!r}")
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise ValueError(f"--out-dir {self.out_dir} exists and is not a folder")
        parse_trackers(self.log)
        if self.engine == "local":
            resolve_device(self.device)
        elif self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device: with --engine ray, expected auto, cpu or cuda, got {self.device!r}")


class Study:
    def __init__(self, config: StudyConfig):
        config = config.resolved()
        config.validate()
        self.config = config
        self.preset = PRESETS[config.preset]
        self.layout = StudyLayout(Path(config.out_dir))
        self._corpus_digest: str | None = None

    # ---------------------------------------------------------------- stages
    def pretrain(self, tokenizer: str, arch: str, seed: int) -> Path:
        """The pretraining run's folder, trained (or finished) to the preset's steps, its
        weights kept at each of the preset's kept steps on the way. An existing checkpoint is
        continued or reused only when its settings and corpus are the ones asked for here; a
        damaged one is set aside and the run trained again."""
        folder = self.layout.pretrain_dir(tokenizer, arch, seed)
        flags = self._pretrain_flags(tokenizer, arch, seed)
        self._check_same_pretraining(folder, flags)
        for step in self.preset.kept_steps:
            self._keep_checkpoint(tokenizer, arch, seed, step, flags)
        self._train_to(folder, flags, self.preset.pretrain_steps)
        return folder

    def _pretrain_flags(self, tokenizer: str, arch: str, seed: int) -> list[str]:
        """charfast.train's flags of a pretraining, but for --out-dir and --max-steps."""
        flags = [*self.preset.train_flags, "--tokenizer", tokenizer, "--arch", arch, "--seed", str(seed)]
        flags += ["--device", self.config.device, "--sample-tokens", "0", "--no-progress"]
        if self.config.log:  # run control: in no record's built_from
            flags += ["--log", self.config.log, "--wandb-project", self.config.wandb_project]
            flags += ["--wandb-run-name", f"{tokenizer} {arch} seed{seed} pretrain"]
        if self.preset.kept_steps:  # the same schedule whichever step a segment of the run stops at
            flags += ["--lr-decay-steps", str(self.preset.pretrain_steps)]
        return flags + (["--data", self.config.data] if self.config.data else [])

    def _train_to(self, folder: Path, flags: list[str], steps: int) -> None:
        """Train (or continue) the run in `folder` to `steps`; nothing when it is there."""
        ckpt = folder / "ckpt.pt"
        flags = [*flags, "--out-dir", str(folder), "--max-steps", str(steps)]
        if ckpt.exists():
            flags.append("--resume")
            if resolve_config(flags).checkpoint["step"] >= steps:
                return
        code = train.main(flags)
        if code >= 128:
            raise Interrupted(f"pretraining {folder} was interrupted; run the study again to continue", code - 128)
        if code != 0:
            raise RunFailed(f"pretraining {folder} failed (exit {code}; see the message above)")
        reached = load_checkpoint(ckpt)["step"]
        if reached < steps:
            raise RunFailed(f"pretraining {folder} stopped at step {reached} of {steps}")

    def _keep_checkpoint(self, tokenizer: str, arch: str, seed: int, step: int, flags: list[str]) -> Path:
        """The pretraining's weights at `step`, kept as their own stage (its record says what
        run and step they are): taken on the way when the run has not passed `step`, else
        from a run of its own to `step` (the same numbers: runs are deterministic and the
        schedule is the whole run's)."""
        kept = self.layout.kept_checkpoint(tokenizer, arch, seed, step)
        record_path = kept.with_suffix(".json")
        built_from = {"pretraining": self._portable(flags), "step": step}
        if reusable(record_path, built_from, [kept]) is not None:
            return kept
        folder = self.layout.pretrain_dir(tokenizer, arch, seed)
        main_ckpt = folder / "ckpt.pt"
        passed = main_ckpt.exists() and load_checkpoint(main_ckpt)["step"] > step
        source = kept.parent / f"run-to-step{step}" if passed else folder
        self._set_aside_if_damaged(source / "ckpt.pt")
        self._train_to(source, flags, step)
        with atomic_write(kept) as f:
            f.write((source / "ckpt.pt").read_bytes())
        if passed:
            shutil.rmtree(source)
        write_record(record_path, {"weights_sha256": weights_digest(kept)}, built_from, [kept])
        return kept

    def _portable(self, flags: list[str]) -> dict:
        """A pretraining's computed settings as a record holds them: the corpus by its digest,
        not by the path a node mounts it at."""
        settings = computed_settings(settings_from_flags([*flags, "--out-dir", "-"])[0])
        return {**settings, "data": self.corpus_digest()}

    def corpus_digest(self) -> str:
        """SHA-256 of the corpus's documents (names and texts), computed once per Study."""
        if self._corpus_digest is None:
            self._corpus_digest = corpus_digest(load_documents(self.config.data))
        return self._corpus_digest

    def checkpoint_at(self, tokenizer: str, arch: str, seed: int, step: int) -> Path:
        """The pretrained weights the later stages of `step` start from."""
        if step == self.preset.pretrain_steps:
            return self.layout.pretrain_dir(tokenizer, arch, seed) / "ckpt.pt"  # it verifies itself on loading
        kept = self.layout.kept_checkpoint(tokenizer, arch, seed, step)
        return verified(kept, kept.with_suffix(".json"))

    def _check_same_pretraining(self, folder: Path, flags: list[str]) -> None:
        """A ValueError when the pretraining in `folder` computes something other than a fresh
        run of `flags` would (e.g. another preset's model, or another corpus under the same
        path): it is never continued or reused. The corpus is compared by content where the
        checkpoint records it (else, for an older one, by path). A damaged checkpoint is set
        aside (the run trains again)."""
        state = self._set_aside_if_damaged(folder / "ckpt.pt")
        if state is None:
            return
        wanted = computed_settings(settings_from_flags(flags)[0])
        saved = state["config"]
        differ = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in wanted.items() if saved.get(k) != v]
        if "corpus_sha256" in state:
            differ = [d for d in differ if not d.startswith("data ")]
            if state["corpus_sha256"] != self.corpus_digest():
                differ.append(
                    f"its corpus (content SHA-256 {state['corpus_sha256'][:12]}...) is not the one --data holds "
                    f"now ({self.corpus_digest()[:12]}...)"
                )
        if differ:
            raise ValueError(
                f"--out-dir {self.config.out_dir}: {folder} holds a pretraining with other settings "
                f"({'; '.join(differ)}), e.g. from another preset or corpus; choose another --out-dir, or remove "
                "that folder to pretrain it again"
            )

    @staticmethod
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

    @staticmethod
    def pretrained(ckpt: Path) -> tuple[dict, dict]:
        """(the checkpoint at `ckpt`, what a stage built on its weights records: their step and
        their digest), from one read of it."""
        state = load_checkpoint(ckpt)
        return state, {"pretrain_step": state["step"], "pretrain_weights_sha256": model_digest(state["model"])}

    def load_pretrained(self, ckpt: Path, state: dict) -> LoadedRun:
        """The pretrained run of `ckpt` (its checkpoint `state`, read already) on this stage's
        device, its corpus read from this study's --data."""
        return load_run(ckpt.parent, ckpt=ckpt, device=self.config.device, data=self.config.data, state=state)

    def freeze_splits(self, tokenizer: str) -> Path:
        """The splits stage: a tokenizer's word splits and test set, frozen under its folder
        (the rare-token split needs the pretraining tokens of the tokenizer's first run), or
        rebuilt when what they were built from changed (the tokenizer, the corpus, the split
        and test settings) or a file of theirs is damaged. Returns the test set's path."""
        pretrain_dir = self.layout.pretrain_dir(tokenizer, self.config.archs[0], self.config.seeds[0])
        splits_dir = self.layout.splits_dir(tokenizer)
        state = load_checkpoint(pretrain_dir / "ckpt.pt")
        identity = {"tokenizer": tokenizer, "tokenizer_identity": state["tokenizer"]}
        if "corpus_sha256" in state:  # splits frozen before checkpoints knew their corpus lack it
            identity["corpus_sha256"] = state["corpus_sha256"]
        if not self._splits_frozen(splits_dir, identity):
            config, encoding = load_tokenizer(state, pretrain_dir / "ckpt.pt", self.config.data)
            train_docs, _ = split_documents(load_documents(config.data), config.val_fraction, seed=config.seed)
            tokens = tokenize(encoding, train_docs, "train", cache_dir=config.cache_dir, show_progress=False)
            token_counts = token_frequencies(tokens, encoding.n_vocab)  # the pretraining's training tokens
            splits = make_splits(word_counts(train_docs), encoding, token_counts, seed=0)
            freeze_splits(splits, splits_dir, meta=identity)
        splits, _ = load_splits(splits_dir)
        test_path = self.layout.test_set(tokenizer)
        built_from = self._test_set_built_from(tokenizer)
        if reusable(test_path, built_from) is None:
            questions = [dict(split=s, **dataclasses.asdict(e)) for s, e in self._draw_test_set(splits)]
            write_record(test_path, {"questions": questions}, built_from)
        return test_path

    @staticmethod
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

    def _test_set_built_from(self, tokenizer: str) -> dict:
        return {
            "splits_manifest_sha256": file_sha256(self.layout.splits_dir(tokenizer) / MANIFEST),
            "tasks": list(self.config.tasks),
            "examples_per_cell": self.preset.examples_per_cell,
            "test_seed": self.config.test_seed,
        }

    def splits_and_test_set(self, tokenizer: str):
        """(word splits, [(split, Example)]) of a tokenizer, as its splits stage froze them:
        read only (one writer per file); a RunFailed when they are missing, stale or damaged."""
        splits_dir = self.layout.splits_dir(tokenizer)
        saved = read_record(self.layout.test_set(tokenizer)) if (splits_dir / MANIFEST).exists() else None
        if not isinstance(saved, dict) or saved.get("built_from") != self._test_set_built_from(tokenizer):
            raise RunFailed(
                f"the splits and test set of {tokenizer} are missing or stale: splits({tokenizer}) runs first"
            )
        try:
            splits, _ = load_splits(splits_dir)
        except ValueError as err:  # a damaged file: the splits stage of a rerun freezes them again
            raise RunFailed(str(err)) from None
        test_set = [
            (row.pop("split"), Example(**{**row, "slots": tuple(map(tuple, row["slots"]))}))
            for row in saved["questions"]
        ]
        return splits, test_set

    def _draw_test_set(self, splits) -> list[tuple[str, Example]]:
        rng = random.Random(self.config.test_seed)
        return [
            (split, example)
            for split in SPLITS
            for task in self.config.tasks
            for example in draw_examples(task, getattr(splits, split), self.preset.examples_per_cell, rng)
        ]

    def curve_questions(self, test_set: list[tuple[str, Example]]) -> list[tuple[str, Example]]:
        """The learning curves' questions: the first curve_examples of each task on each
        CURVE_SPLITS split of the frozen test set (a prefix keeps count and contains balanced
        when curve_examples is a multiple of their classes)."""
        taken: dict[tuple[str, str], int] = defaultdict(int)
        chosen = []
        for split, example in test_set:
            key = (split, example.task)
            if split in CURVE_SPLITS and taken[key] < self.preset.curve_examples:
                taken[key] += 1
                chosen.append((split, example))
        return chosen

    def probe_at(self, tokenizer: str, arch: str, seed: int, step: int) -> Path:
        """The probe stage: probe.json of one pretrained run's weights at pretraining `step`,
        the spelling probe of its input vectors; reused only when it was built from those
        weights (their step and hash)."""
        path = self.layout.probe(tokenizer, arch, seed, self._at(step))
        ckpt = self.checkpoint_at(tokenizer, arch, seed, step)
        state, built_from = self.pretrained(ckpt)
        if reusable(path, built_from) is not None:
            return path
        run = self.load_pretrained(ckpt, state)
        record = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "pretrain_step": step}
        record["n_vocab"] = run.encoding.n_vocab
        record["probe"] = probe_model(run.model, run.encoding)
        write_record(path, record, built_from)
        return path

    def _at(self, step: int) -> int | None:
        """The layout's name of a pretraining point: None for the last (the folders of a study
        without kept steps), else the step."""
        return None if step == self.preset.pretrain_steps else step

    def finetune_config(self, finetuning: str, seed: int) -> FinetuneConfig:
        mixed = finetuning == MIXED
        return FinetuneConfig(
            tasks=self.config.tasks if mixed else (finetuning,),
            steps=self.preset.finetune_steps if mixed else self.preset.solo_steps,
            batch_size=self.preset.finetune_batch,
            lr=self.preset.finetune_lr,
            seed=seed,
        )

    def finetune_at(self, tokenizer: str, arch: str, seed: int, step: int, finetuning: str) -> Path:
        """The finetune stage: results.json of one fine-tuning of a pretrained run's weights
        at pretraining `step`: MIXED (all tasks, from the pretrained weights; its weights are
        kept) or a solo task alone (from the mixed weights). Reused only when it was built
        from the same start (the pretrained weights' step and hash, or the mixed weights'
        hash), test set and settings."""
        splits, test_set = self.splits_and_test_set(tokenizer)
        ckpt = self.checkpoint_at(tokenizer, arch, seed, step)
        at = self._at(step)
        mixed_weights = self.layout.finetuned_weights(tokenizer, arch, seed, MIXED, at)
        config = self.finetune_config(finetuning, seed)
        mixed_record = self.layout.results(tokenizer, arch, seed, MIXED, at)
        if finetuning != MIXED and not mixed_weights.exists():
            raise RunFailed(f"{mixed_weights} is missing: the mixed fine-tuning runs first")
        state, pretrained = self.pretrained(ckpt)
        start = (
            pretrained
            if finetuning == MIXED
            else {"after_mixed_weights_sha256": weights_digest(verified(mixed_weights, mixed_record))}
        )
        built_from = {
            **start,
            "test_set_sha256": file_sha256(self.layout.test_set(tokenizer)),
            "finetune": json.loads(json.dumps(dataclasses.asdict(config))),  # as JSON gives it back
            "curve_steps": self._curve_steps(config.steps),
            "curve_examples": self.preset.curve_examples,
        }
        path = self.layout.results(tokenizer, arch, seed, finetuning, at)
        written = [mixed_weights] if finetuning == MIXED else []
        if reusable(path, built_from, written) is not None:
            return path
        run = self.load_pretrained(ckpt, state)
        if finetuning != MIXED:
            run.model.load_state_dict(torch.load(mixed_weights, map_location=run.device, weights_only=True))
        if run.model.char_emb is not None:  # its weights change between the learning curve's points
            run.model.char_emb.inference_cache = False
        questions = [(split, example) for split, example in test_set if example.task in config.tasks]
        identity = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "finetuning": finetuning}
        identity["pretrain_step"] = step
        trackers = self.trackers(path.parent, identity, config)
        try:
            record = self._finetune_and_score(run, splits.train, questions, config, built_from["curve_steps"], trackers)
        finally:
            if trackers is not None:
                trackers.close()
        if finetuning == MIXED:  # before its results, which mark the fine-tuning finished
            with atomic_write(mixed_weights) as f:
                torch.save(run.model.state_dict(), f)
        write_record(path, {**identity, **record}, built_from, written)
        return path

    def trackers(self, folder: Path, identity: dict, config: FinetuneConfig) -> Trackers | None:
        """A fine-tuning's trackers (--log), logging into `folder`; None without --log."""
        if not self.config.log:
            return None
        name = "{tokenizer} {arch} seed{seed} step{pretrain_step} {finetuning}".format(**identity)
        settings = {**identity, **dataclasses.asdict(config)}
        names = parse_trackers(self.config.log)
        return Trackers(names, folder, settings, name=name, project=self.config.wandb_project)

    def _curve_steps(self, steps: int) -> list[int]:
        points = self.preset.curve_points
        return sorted({round(k * steps / points) for k in range(1, points + 1)})

    def _finetune_and_score(
        self, run: LoadedRun, words, questions, config: FinetuneConfig, curve_steps: list[int], trackers
    ) -> dict:
        """Fine-tune run.model in place, scoring a prefix of `questions` at step 0 and at
        `curve_steps` (the learning curve), then score all of them: the results.json fields
        of one fine-tuning. The losses and the curve's exact matches go to `trackers` too."""
        model, encoding, device = run.model, run.encoding, run.device
        curve_questions = self.curve_questions(questions)

        def curve_point(step: int) -> dict:
            scores = summarize(evaluate_examples(model, encoding, curve_questions, device=device))
            point = {
                "step": step,
                "exact_match": {f"{task}|{split}": v["exact_match"] for (task, split), v in scores.items()},
            }
            if trackers is not None:
                trackers.scalars(step, {f"exact_match/{cell}": v for cell, v in point["exact_match"].items()})
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

    def stages(self) -> list[Stage]:
        return study_stages(self.config, self.preset)

    def run_stage(self, stage: Stage) -> Path:
        """Run one stage (its dependencies done); the path of the record it wrote. The temp
        files a killed earlier try of it left on this host go first (a pretraining's own
        run sweeps its folder when it claims it)."""
        if stage.kind in ("probe", "finetune"):
            tokenizer, arch, seed, step = stage.key[:4]
            record = self.layout.probe(tokenizer, arch, seed, self._at(step))
            if stage.kind == "finetune":
                record = self.layout.results(tokenizer, arch, seed, stage.key[4], self._at(step))
            remove_stale_temp_files(record.parent)
        elif stage.kind == "splits":
            remove_stale_temp_files(self.layout.tokenizer_dir(*stage.key))
            remove_stale_temp_files(self.layout.splits_dir(*stage.key))
        if stage.kind == "pretrain":
            return self.pretrain(*stage.key) / "ckpt.pt"
        if stage.kind == "splits":
            return self.freeze_splits(*stage.key)
        if stage.kind == "probe":
            return self.probe_at(*stage.key)
        return self.finetune_at(*stage.key)


def run_stage(config: StudyConfig, stage: Stage) -> str:
    """A stage of the study of `config`, as an engine's worker runs it: the record's path."""
    return str(Study(config).run_stage(stage))

"""The character-task study's stages, for every tokenizer, seed and arch.

For each tokenizer, seed and architecture (char vs the parameter-matched baseline):

    pretrain    python -m charfast.train on the corpus (resumed if interrupted)
    splits      words of the corpus split into train / heldout / heldout_rare / nonce,
                frozen once per tokenizer (charfast.study.words)
    test set    a fixed, seeded set of task examples per task and split, frozen once
    fine-tune   the pretrained model on task examples of train words, loss on answers only
    evaluate    greedy exact match and teacher-forced answer loss on the test set

Every stage writes its result into the output folder with what it was built from (the
pretraining's step and checkpoint hash, the frozen splits, the test set, the settings), and
is reused only when those inputs are still the same, so an interrupted study continues
where it stopped and a changed input is never silently mixed in (the folders:
charfast.study.layout). The report (charfast.study.report) then compares the archs per
task and split with paired bootstrap intervals over the shared test questions, averaged
over seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from charfast.atomic import atomic_write
from charfast.gpt import train
from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.config import resolve_config
from charfast.gpt.data import load_documents, split_documents
from charfast.gpt.distributed import resolve_device
from charfast.gpt.failures import Interrupted, RunFailed
from charfast.gpt.model import ARCHS as GPT_ARCHS
from charfast.gpt.tokenizer import check_tokenizer_name
from charfast.study.evaluate import evaluate_examples
from charfast.study.finetune import FinetuneConfig, finetune
from charfast.study.layout import StudyLayout
from charfast.study.tasks import TASKS, Example, make_example
from charfast.study.words import MANIFEST, freeze_splits, load_splits, make_splits, token_frequencies, word_counts

ARCHS = ("char", "baseline-matched")
SPLITS = ("train", "heldout", "heldout_rare", "nonce")

PRESETS = {
    # ~25 minutes on a 2-core CPU for 3 seeds: the default CPU model, shortened runs.
    "small": dict(
        pretrain_steps=400,
        finetune_steps=300,
        finetune_batch=32,
        finetune_lr=1e-3,
        examples_per_cell=30,
        train_flags=("--eval-interval", "100", "--eval-iters", "4"),
    ),
    # GPU: GPT-2 small shape on cl100k (bring a big corpus with --data).
    "full": dict(
        pretrain_steps=20000,
        finetune_steps=3000,
        finetune_batch=64,
        finetune_lr=3e-5,
        examples_per_cell=500,
        train_flags=("--preset", "gpt2-small", "--block-size", "256"),
    ),
}


@dataclass
class StudyConfig:
    out_dir: str = "study"
    preset: str = "small"
    tokenizers: tuple[str, ...] = ("bpe:512",)
    seeds: tuple[int, ...] = (0, 1, 2)
    archs: tuple[str, ...] = ARCHS
    tasks: tuple[str, ...] = tuple(TASKS)
    data: str | None = None
    device: str = "auto"
    test_seed: int = 1234

    def validate(self) -> None:
        """Every setting, before any stage runs: a ValueError naming the flag."""
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for flag, values, known in (("--tasks", self.tasks, TASKS), ("--archs", self.archs, GPT_ARCHS)):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"{flag} must name some of {', '.join(known)}; unknown: {unknown}")
            if len(set(values)) != len(values):
                raise ValueError(f"{flag} names one twice: {list(values)}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be integers >= 0, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.tokenizers)) != len(self.tokenizers):
            raise ValueError("--seeds and --tokenizers must not repeat a value")
        if not self.tokenizers:
            raise ValueError("--tokenizers needs at least one tokenizer")
        for tokenizer in self.tokenizers:
            check_tokenizer_name(tokenizer)
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"--data: {self.data} does not exist")
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise ValueError(f"--out-dir {self.out_dir} exists and is not a folder")
        resolve_device(self.device)


def _write_json(path: Path, value) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(value, indent=1) + "\n").encode("utf-8"))


def _read_json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Study:
    def __init__(self, config: StudyConfig):
        config.validate()
        self.config = config
        self.preset = PRESETS[config.preset]
        self.layout = StudyLayout(Path(config.out_dir))

    # ---------------------------------------------------------------- stages
    def pretrain(self, tokenizer: str, arch: str, seed: int) -> Path:
        """The pretraining run's folder, trained (or finished) to the preset's steps. An
        existing checkpoint is reused only when its settings are the ones asked for here."""
        folder = self.layout.pretrain_dir(tokenizer, arch, seed)
        steps = self.preset["pretrain_steps"]
        ckpt = folder / "ckpt.pt"
        flags = [*self.preset["train_flags"], "--tokenizer", tokenizer, "--arch", arch, "--seed", str(seed)]
        flags += ["--max-steps", str(steps), "--out-dir", str(folder), "--device", self.config.device]
        flags += ["--sample-tokens", "0", *(["--data", self.config.data] if self.config.data else [])]
        if ckpt.exists():
            flags.append("--resume")
            if resolve_config(flags).checkpoint["step"] >= steps:  # its settings are checked against the flags
                return folder
        code = train.main(flags)
        if code >= 128:
            raise Interrupted(f"pretraining {folder} was interrupted; run the study again to continue", code - 128)
        if code != 0:
            raise RunFailed(f"pretraining {folder} failed (exit {code}; see the message above)")
        reached = load_checkpoint(ckpt)["step"]
        if reached < steps:
            raise RunFailed(f"pretraining {folder} stopped at step {reached} of {steps}")
        return folder

    def pretrain_identity(self, folder: Path) -> dict:
        """What a stage built on a pretraining records: its step and its checkpoint's hash."""
        ckpt = folder / "ckpt.pt"
        return {"pretrain_step": load_checkpoint(ckpt)["step"], "pretrain_sha256": _sha256(ckpt)}

    def load_pretrained(self, folder: Path) -> train.Trainer:
        """The finished pretraining run as a Trainer: model, encoding and training tokens."""
        return train.restore_run(folder, device=self.config.device)

    def splits_and_test_set(self, tokenizer: str, pretrain_dir: Path):
        """(word splits, [(split, Example)]) of a tokenizer, frozen under its folder on first use
        (the rare-token split needs the pretraining tokens of `pretrain_dir`'s run). Both are
        rebuilt when what they were built from changed: the tokenizer, or the splits and the
        test settings."""
        splits_dir = self.layout.splits_dir(tokenizer)
        identity = load_checkpoint(pretrain_dir / "ckpt.pt")["tokenizer"]
        manifest = _read_json(splits_dir / MANIFEST)
        if manifest is None or manifest.get("meta", {}).get("tokenizer_identity") != identity:
            trainer = self.load_pretrained(pretrain_dir)
            train_docs, _ = split_documents(
                load_documents(trainer.config.data), trainer.config.val_fraction, seed=trainer.config.seed
            )
            token_counts = token_frequencies(trainer.train_batches.tokens, trainer.encoding.n_vocab)
            splits = make_splits(word_counts(train_docs), trainer.encoding, token_counts, seed=0)
            freeze_splits(splits, splits_dir, meta={"tokenizer": tokenizer, "tokenizer_identity": identity})
        splits, _ = load_splits(splits_dir)
        test_path = self.layout.test_set(tokenizer)
        built_from = {
            "splits_manifest_sha256": _sha256(splits_dir / MANIFEST),
            "tasks": list(self.config.tasks),
            "examples_per_cell": self.preset["examples_per_cell"],
            "test_seed": self.config.test_seed,
        }
        saved = _read_json(test_path)
        if not isinstance(saved, dict) or saved.get("built_from") != built_from:
            questions = [dict(split=s, **dataclasses.asdict(e)) for s, e in self._draw_test_set(splits)]
            _write_json(test_path, {"built_from": built_from, "questions": questions})
            saved = _read_json(test_path)
        test_set = [
            (row.pop("split"), Example(**{**row, "slots": tuple(map(tuple, row["slots"]))}))
            for row in saved["questions"]
        ]
        return splits, test_set

    def _draw_test_set(self, splits) -> list[tuple[str, Example]]:
        rng = random.Random(self.config.test_seed)
        test_set = []
        for split in SPLITS:
            for task in self.config.tasks:
                words = [w for w in getattr(splits, split) if len(set(w)) >= TASKS[task].min_distinct_letters]
                for word in rng.sample(words, min(self.preset["examples_per_cell"], len(words))):
                    test_set.append((split, make_example(task, word, rng)))
        return test_set

    def finetune_and_evaluate(self, tokenizer: str, arch: str, seed: int, pretrain_dir: Path, splits, test_set) -> Path:
        """results.json of the fine-tuned model, reused only when it was built from this
        pretraining (step and checkpoint hash), this test set and these settings."""
        results_path = self.layout.results(tokenizer, arch, seed)
        config = FinetuneConfig(
            tasks=self.config.tasks,
            steps=self.preset["finetune_steps"],
            batch_size=self.preset["finetune_batch"],
            lr=self.preset["finetune_lr"],
            seed=seed,
        )
        built_from = {
            **self.pretrain_identity(pretrain_dir),
            "test_set_sha256": _sha256(self.layout.test_set(tokenizer)),
            "finetune": json.loads(json.dumps(dataclasses.asdict(config))),  # as JSON gives it back
        }
        saved = _read_json(results_path)
        if isinstance(saved, dict) and saved.get("built_from") == built_from:
            return results_path
        trainer = self.load_pretrained(pretrain_dir)
        model, encoding = trainer.model, trainer.encoding
        curve = finetune(model, encoding, list(splits.train), config, device=trainer.device)
        after = evaluate_examples(model, encoding, test_set, device=trainer.device)
        _write_json(
            results_path,
            {
                "tokenizer": tokenizer,
                "arch": arch,
                "seed": seed,
                "built_from": built_from,
                "finetune": dataclasses.asdict(config),
                "finetune_curve": curve,
                "after": [dataclasses.asdict(r) for r in after],
            },
        )
        return results_path

    def run(self) -> list[Path]:
        """Every stage for every tokenizer, seed and arch; returns the results.json paths."""
        results = []
        for tokenizer in self.config.tokenizers:
            pretrained = {
                (arch, seed): self.pretrain(tokenizer, arch, seed)
                for seed in self.config.seeds
                for arch in self.config.archs
            }
            splits, test_set = self.splits_and_test_set(tokenizer, next(iter(pretrained.values())))
            for (arch, seed), folder in pretrained.items():
                results.append(self.finetune_and_evaluate(tokenizer, arch, seed, folder, splits, test_set))
        return results

"""The character-task study: `python -m charfast.study`.

For each tokenizer, seed and architecture (char vs the parameter-matched baseline):

    pretrain    python -m charfast.train on the corpus (resumed if interrupted)
    splits      words of the corpus split into train / heldout / heldout_rare / nonce,
                frozen once per tokenizer (charfast.words)
    test set    a fixed, seeded set of task examples per task and split, frozen once
    fine-tune   the pretrained model on task examples of train words, loss on answers only
    evaluate    greedy exact match and teacher-forced answer loss on the test set

Every stage writes its result into the output folder and is skipped when that result is
already there, so an interrupted study continues where it stopped. The report
(charfast.study_report) then compares the archs per task and split with paired bootstrap
intervals over the shared test questions, averaged over seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from charfast import train
from charfast.atomic import atomic_write
from charfast.checkpoint import load_checkpoint
from charfast.data import load_documents, split_documents
from charfast.evaluate import evaluate_examples
from charfast.finetune import FinetuneConfig, finetune
from charfast.table import safe_filename as slug
from charfast.tasks import STUDY_TASKS, TASKS, Example, make_example
from charfast.words import freeze_splits, load_splits, make_splits, token_frequencies, word_counts

ARCHS = ("char", "baseline-matched")
SPLITS = ("train", "heldout", "heldout_rare", "nonce")

PRESETS = {
    # ~25 minutes on a 2-core CPU for 3 seeds: the default CPU model, shortened runs.
    "small": dict(pretrain_steps=400, finetune_steps=300, finetune_batch=32, finetune_lr=1e-3,
                  examples_per_cell=30, train_flags=("--eval-interval", "100", "--eval-iters", "4")),
    # GPU: GPT-2 small shape on cl100k (bring a big corpus with --data).
    "full": dict(pretrain_steps=20000, finetune_steps=3000, finetune_batch=64, finetune_lr=3e-5,
                 examples_per_cell=500, train_flags=("--preset", "gpt2-small", "--block-size", "256")),
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
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        unknown = [t for t in self.tasks if t not in TASKS] + [a for a in self.archs if a not in train.ARCHS]
        if unknown or not self.tasks or not self.archs or not self.seeds or not self.tokenizers:
            raise ValueError(f"study: tasks, archs, seeds and tokenizers must be non-empty and known; "
                             f"unknown: {unknown}")


def run_folder(tokenizer: str, arch: str, seed: int) -> Path:
    """Where one (tokenizer, arch, seed) run lives, relative to the study's folder."""
    return Path(slug(tokenizer)) / f"{arch}-seed{seed}"


def _write_json(path: Path, value) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(value, indent=1) + "\n").encode("utf-8"))


class Study:
    def __init__(self, config: StudyConfig):
        config.validate()
        self.config = config
        self.preset = PRESETS[config.preset]
        self.root = Path(config.out_dir)

    # ---------------------------------------------------------------- stages
    def pretrain(self, tokenizer: str, arch: str, seed: int) -> Path:
        """The pretraining run's folder, trained (or finished) to the preset's steps."""
        folder = self.root / run_folder(tokenizer, arch, seed) / "pretrain"
        steps = self.preset["pretrain_steps"]
        ckpt = folder / "ckpt.pt"
        if ckpt.exists() and load_checkpoint(ckpt)["step"] >= steps:
            return folder
        flags = [*self.preset["train_flags"], "--tokenizer", tokenizer, "--arch", arch, "--seed", str(seed),
                 "--max-steps", str(steps), "--out-dir", str(folder), "--device", self.config.device,
                 "--sample-tokens", "0"]
        if self.config.data:
            flags += ["--data", self.config.data]
        if ckpt.exists():
            flags.append("--resume")
        if train.main(flags) != 0:
            raise RuntimeError(f"pretraining {folder} failed (see the message above)")
        return folder

    def load_pretrained(self, folder: Path) -> train.Trainer:
        """The finished pretraining run as a Trainer: model, encoding and training tokens."""
        config, asked = train.resolve_config(["--out-dir", str(folder), "--resume", "--device", self.config.device,
                                              "--no-progress"])
        return train.Trainer(config, asked)

    def splits_and_test_set(self, tokenizer: str, pretrain_dir: Path):
        """(word splits, [(split, Example)]) of a tokenizer, frozen under its folder on first use
        (the rare-token split needs the pretraining tokens of `pretrain_dir`'s run)."""
        folder = self.root / slug(tokenizer)
        if not (folder / "splits" / "manifest.json").exists():
            trainer = self.load_pretrained(pretrain_dir)
            train_docs, _ = split_documents(load_documents(trainer.config.data), trainer.config.val_fraction,
                                            seed=trainer.config.seed)
            token_counts = token_frequencies(trainer.train_batches.tokens, trainer.encoding.n_vocab)
            splits = make_splits(word_counts(train_docs), trainer.encoding, token_counts, seed=0)
            freeze_splits(splits, folder / "splits", meta={"tokenizer": tokenizer})
        splits, _ = load_splits(folder / "splits")
        test_path = folder / "test_set.json"
        if not test_path.exists():
            _write_json(test_path, [dict(split=s, **dataclasses.asdict(e)) for s, e in self._draw_test_set(splits)])
        rows = json.loads(test_path.read_text(encoding="utf-8"))
        test_set = [(row.pop("split"), Example(**{**row, "slots": tuple(map(tuple, row["slots"]))})) for row in rows]
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

    def finetune_and_evaluate(self, tokenizer: str, arch: str, seed: int, pretrain_dir: Path,
                              splits, test_set) -> Path:
        """results.json of the fine-tuned model (reused when present)."""
        folder = pretrain_dir.parent / "finetune"
        results_path = folder / "results.json"
        if results_path.exists():
            return results_path
        trainer = self.load_pretrained(pretrain_dir)
        model, encoding = trainer.model, trainer.encoding
        config = FinetuneConfig(tasks=self.config.tasks, steps=self.preset["finetune_steps"],
                                batch_size=self.preset["finetune_batch"], lr=self.preset["finetune_lr"], seed=seed)
        curve = finetune(model, encoding, list(splits.train), config, device=trainer.device)
        after = evaluate_examples(model, encoding, test_set, device=trainer.device)
        _write_json(results_path, {
            "tokenizer": tokenizer, "arch": arch, "seed": seed, "finetune": dataclasses.asdict(config),
            "finetune_curve": curve, "after": [dataclasses.asdict(r) for r in after]})
        return results_path

    def run(self) -> list[Path]:
        """Every stage for every tokenizer, seed and arch; returns the results.json paths."""
        results = []
        for tokenizer in self.config.tokenizers:
            pretrained = {(arch, seed): self.pretrain(tokenizer, arch, seed)
                          for seed in self.config.seeds for arch in self.config.archs}
            splits, test_set = self.splits_and_test_set(tokenizer, next(iter(pretrained.values())))
            for (arch, seed), folder in pretrained.items():
                results.append(self.finetune_and_evaluate(tokenizer, arch, seed, folder, splits, test_set))
        return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m charfast.study", description=(
        "Pretrain char and baseline-matched GPTs, fine-tune them on character tasks and compare "
        "exact-match accuracy per task and split; finished stages are reused."))
    defaults = StudyConfig()
    parser.add_argument("--out-dir", default=defaults.out_dir, help="where every stage and the report go")
    parser.add_argument("--preset", default=defaults.preset, choices=list(PRESETS),
                        help="small: ~25 min on a 2-core CPU; full: GPT-2 small on a GPU")
    parser.add_argument("--tokenizers", nargs="+", default=list(defaults.tokenizers),
                        help="one run set per tokenizer: the vocabulary sweep, e.g. bpe:512 bpe:4096 cl100k_base")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    parser.add_argument("--archs", nargs="+", default=list(defaults.archs))
    parser.add_argument("--tasks", nargs="+", default=list(defaults.tasks),
                        help=f"default: all; the study's four are {' '.join(STUDY_TASKS)}")
    parser.add_argument("--data", default=None, help="text file or folder (default: the embedded Shakespeare)")
    parser.add_argument("--device", default=defaults.device)
    return parser


def main(argv: list[str] | None = None) -> int:
    from charfast.study_report import write_report
    args = build_parser().parse_args(argv)
    config = StudyConfig(out_dir=args.out_dir, preset=args.preset, tokenizers=tuple(args.tokenizers),
                         seeds=tuple(args.seeds), archs=tuple(args.archs), tasks=tuple(args.tasks),
                         data=args.data, device=args.device)
    try:
        results = Study(config).run()
    except ValueError as err:
        print(f"charfast.study: error: {err}", file=sys.stderr)
        return 2
    report = write_report(results, Path(config.out_dir))
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The study's output folder: where each stage writes, shared by the pipeline that writes
it and the report that reads it.

    OUT_DIR/
      report.md, report.json, loss_curves.png, sweep.png, learning_curves_<tokenizer>.png
      <tokenizer>/                   one folder per tokenizer (its name made file-safe)
        splits/                      the frozen word splits (charfast.study.words)
        test_set.json                the frozen task questions
        <arch>-seed<seed>/
          pretrain/                  a charfast.train run: ckpt.pt, run.json, metrics.jsonl;
                                     kept/step<N>.pt (.json): its weights at a kept step
          probe.json                 the spelling probe of the pretrained input vectors
          finetune/<fine-tuning>/results.json
                                     one per fine-tuning: "mixed" (all tasks at once, from
                                     the pretrained model; its weights.pt beside it), then a
                                     solo task's name (that task alone, from the mixed
                                     weights): learning curve, fine-tuning losses, every
                                     test answer of its tasks
          at-step<N>/                the same stages (probe.json, finetune/) from the
                                     weights kept at pretraining step N
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charfast.cache import safe_filename

MIXED = "mixed"  # the fine-tuning on all tasks at once; a solo fine-tuning is named by its task


def finetuning_kind(finetuning: str) -> str:
    """How a fine-tuning trained its tasks, for the report: "mixed" or "then alone"."""
    return MIXED if finetuning == MIXED else "then alone"


@dataclass(frozen=True)
class StudyLayout:
    root: Path

    def tokenizer_dir(self, tokenizer: str) -> Path:
        return self.root / safe_filename(tokenizer)

    def splits_dir(self, tokenizer: str) -> Path:
        return self.tokenizer_dir(tokenizer) / "splits"

    def test_set(self, tokenizer: str) -> Path:
        return self.tokenizer_dir(tokenizer) / "test_set.json"

    def run_dir(self, tokenizer: str, arch: str, seed: int) -> Path:
        return self.tokenizer_dir(tokenizer) / f"{arch}-seed{seed}"

    def pretrain_dir(self, tokenizer: str, arch: str, seed: int) -> Path:
        return self.run_dir(tokenizer, arch, seed) / "pretrain"

    def kept_checkpoint(self, tokenizer: str, arch: str, seed: int, step: int) -> Path:
        return self.pretrain_dir(tokenizer, arch, seed) / "kept" / f"step{step}.pt"

    def stage_dir(self, tokenizer: str, arch: str, seed: int, at: int | None = None) -> Path:
        """Where the stages built on the pretraining's last weights (at None) or on those kept
        at step `at` write."""
        run = self.run_dir(tokenizer, arch, seed)
        return run if at is None else run / f"at-step{at}"

    def probe(self, tokenizer: str, arch: str, seed: int, at: int | None = None) -> Path:
        return self.stage_dir(tokenizer, arch, seed, at) / "probe.json"

    def results(self, tokenizer: str, arch: str, seed: int, finetuning: str, at: int | None = None) -> Path:
        return self.stage_dir(tokenizer, arch, seed, at) / "finetune" / finetuning / "results.json"

    def finetuned_weights(self, tokenizer: str, arch: str, seed: int, finetuning: str, at: int | None = None) -> Path:
        return self.stage_dir(tokenizer, arch, seed, at) / "finetune" / finetuning / "weights.pt"

    def learning_curves_plot(self, tokenizer: str) -> Path:
        return self.root / f"learning_curves_{safe_filename(tokenizer)}.png"

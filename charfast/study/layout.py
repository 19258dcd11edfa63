"""The study's output folder: where each stage writes, shared by the pipeline that writes
it and the report that reads it.

    OUT_DIR/
      report.md, report.json, loss_curves.png, sweep.png, learning_curves_<tokenizer>.png
      <tokenizer>/                   one folder per tokenizer (its name made file-safe)
        splits/                      the frozen word splits (charfast.study.words)
        test_set.json                the frozen task questions
        <arch>-seed<seed>/
          pretrain/                  a charfast.train run: ckpt.pt, metrics.jsonl
          finetune/results.json      probe, learning curve, fine-tuning losses, every test answer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charfast.cache import safe_filename


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

    def results(self, tokenizer: str, arch: str, seed: int) -> Path:
        return self.run_dir(tokenizer, arch, seed) / "finetune" / "results.json"

    def learning_curves_plot(self, tokenizer: str) -> Path:
        return self.root / f"learning_curves_{safe_filename(tokenizer)}.png"

"""The study's presets: what each pretrains, fine-tunes and asks, by size (quick: minutes on
a CPU for tests and a first look; small and length: hours on a 2-core CPU; full: GPT-2
small on a GPU), and the names every stage shares (the default archs, the splits)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from charfast.gpt import archs as gpt_archs
from charfast.gpt.config import PRESETS as TRAIN_PRESETS
from charfast.study.probe import DEFAULT_PROBES, PROBES
from charfast.study.tasks import TASKS

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
    train: dict  # the pretraining's TrainConfig overrides (model shape, batch, evals)
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
    probes: tuple[str, ...] = DEFAULT_PROBES  # of the pretrained input vectors (charfast.study.probe)

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


SMALL = Preset(
    tokenizers=("bpe:512", "bpe:4096", "bpe:8192"),
    seeds=(0, 1),
    tasks=SMALL_TASKS,
    pretrain_steps=200,
    train=dict(eval_interval=50, eval_iters=4),
    finetune_steps=3000,
    solo_tasks=("count",),
    solo_steps=2000,
    finetune_batch=32,
    finetune_lr=1e-3,
    examples_per_cell=60,
    curve_points=6,
    curve_examples=20,
)

PRESETS = {
    # Every stage in minutes on a 2-core CPU, with a tiny model: for tests and a first look.
    "quick": Preset(
        tokenizers=("bpe:300", "bpe:512"),
        seeds=(0, 1),
        tasks=SMALL_TASKS,
        pretrain_steps=20,
        train=dict(n_layer=1, n_head=2, n_embd=32, char_dim=16, char_hidden=16)
        | dict(block_size=96, batch_size=8, eval_interval=10, eval_iters=1),
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
    "small": SMALL,
    # Does the baseline learn spelling with 16x the small preset's pretraining? One vocabulary,
    # char against baseline-matched, 2 seeds, pretrained 3200 steps with its weights kept at
    # 200 (the small preset's length), 800 and 3200, each then probed and fine-tuned as the
    # small preset does (mixed 3000 steps, count alone 2000). About 2 hours on a 2-core CPU
    # with --jobs 2 (traded for it: bpe:512 and 8192, the char-shuffled control, a third seed).
    "length": dataclasses.replace(
        SMALL,
        tokenizers=("bpe:4096",),
        pretrain_steps=3200,
        train=dict(eval_interval=100, eval_iters=4),
        archs=("char", "baseline-matched"),
        kept_steps=(200, 800),
    ),
    # Is the LSTM needed? The char-LSTM against cheaper encoders at its parameter count (and
    # hashed n-grams at 8x with its own matched baseline), two vocabularies, three seeds, 500
    # questions per cell; the order-sensitive probes and char_at separate bags from sequences,
    # the nonce words hashing collisions. The decision rule: RESULTS.md. Hours per seed and
    # vocabulary on a 2-core CPU.
    "encoders": dataclasses.replace(
        SMALL,
        tokenizers=("bpe:512", "bpe:4096"),
        seeds=(0, 1, 2),
        tasks=(*SMALL_TASKS, "char_at"),
        archs=("char", "baseline-matched", *gpt_archs.alternatives()),
        examples_per_cell=500,
        probes=PROBES,
    ),
    # GPU: GPT-2 small shape (bring a big corpus with --data).
    "full": Preset(
        tokenizers=("bpe:512", "bpe:4096", "cl100k_base"),
        seeds=(0, 1, 2),
        tasks=tuple(TASKS),
        pretrain_steps=20000,
        train={**TRAIN_PRESETS["gpt2-small"], "block_size": 256},
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

"""Train a GPT (char-aware or baseline): `python -m charfast.train [flags]`.

With no flags it trains the char-aware model on the embedded Shakespeare corpus with a
512-token BPE trained on it, a preset that finishes in minutes on a laptop CPU. Scale out
with `torchrun --nproc_per_node N -m charfast.train ...` (gloo on CPU, nccl on CUDA).

Writes into --out-dir: metrics.jsonl (one JSON object per step: step, lr, train_loss,
tokens_per_s, ms_per_step, grad_norm (before clipping) [, mfu, char_grad_share (the char
encoder's share of the squared gradient norm), val_loss]), ckpt.pt (see
charfast.gpt.checkpoint), loss.png and sample.txt; with --log, the same records and a
sample at each eval to TensorBoard or W&B (charfast.gpt.tracking). --resume continues
from ckpt.pt exactly; Ctrl-C saves and exits.

The settings come from charfast.gpt.config (which owns their precedence and the resume
policy); charfast.gpt.run.run_training runs them: a Trainer (charfast.gpt.trainer) driven
by the loop (charfast.gpt.loop).
"""

from __future__ import annotations

from charfast.gpt.config import settings_from_flags
from charfast.gpt.distributed import shutdown
from charfast.gpt.failures import run_cli
from charfast.gpt.run import run_training


def main(argv: list[str] | None = None) -> int:
    """The CLI; exit codes as in charfast.gpt.failures (0: training finished; 128 + N: signal
    N stopped it after saving, --resume continues)."""
    try:
        return run_cli("charfast.train", lambda: run_training(*settings_from_flags(argv)))
    finally:
        shutdown()

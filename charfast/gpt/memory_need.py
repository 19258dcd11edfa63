"""The least memory a training run needs, checked before any data is read or model built.

Each part below is a lower bound of what the run will hold at once (the model's state in
float32 with its gradients and AdamW's two moments, one micro-batch's logits and residual
streams, the step's token batches, one loss per eval batch), so a run refused here could
never have fit, and a size flag typed with a few zeros too many ends in one line naming
it instead of a traceback or the OOM killer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from charfast.gpt import archs
from charfast.gpt.chunked_loss import chunk_rows
from charfast.gpt.failures import RunFailed
from charfast.gpt.model import GPTConfig, char_encoder_parameter_count

_FLOAT32 = 4
_INT64 = 8


class NotEnoughMemory(RunFailed):
    """The run's settings need more memory than the device has free."""


@dataclass(frozen=True)
class Need:
    what: str  # in words
    flags: tuple[str, ...]  # the settings that size it, by field name
    bytes: int


def least_training_needs(config, vocab_size: int, world_size: int = 1, chunked_head: bool = False) -> list[Need]:
    """Lower bounds of what one process of a training run of `config` (a TrainConfig) holds
    at once, by part, for a vocabulary of `vocab_size` ids. Under --parallel fsdp over
    `world_size` ranks a rank holds its shard of the GPT's weights, gradients and AdamW state
    (the char encoder, kept out of the shards, whole). chunked_head: the loss holds its
    logits a chunk at a time (a CPU run's)."""
    c = config
    model_params = vocab_size * c.n_embd * (1 if c.tie_weights else 2)  # wte (and lm_head)
    model_params += c.block_size * c.n_embd + c.n_layer * 12 * c.n_embd**2  # wpe, the blocks' matrices
    if c.parallel == "fsdp":
        model_params = -(-model_params // world_size)  # this rank's shard
    arch = archs.get(c.arch)
    if arch.encoder is not None:  # every encoder is sized to its budget of char-LSTMs
        char_config = GPTConfig(n_embd=c.n_embd, n_head=1, char_dim=c.char_dim, char_hidden=c.char_hidden)
        model_params += round(arch.budget * char_encoder_parameter_count(char_config, 256))
    tokens = c.batch_size * c.block_size  # of one micro-batch
    logits = _FLOAT32 * tokens * vocab_size
    if chunked_head:  # the CPU's loss holds one chunk of them at a time (charfast.gpt.chunked_loss)
        logits = min(logits, _FLOAT32 * chunk_rows(vocab_size) * vocab_size)
    model_flags = ("n_layer", "n_embd", "block_size", "tokenizer", "char_dim", "char_hidden")
    what = "the model's weights, gradients and AdamW state"
    if c.parallel == "fsdp":
        what += f" (this rank's shard of {world_size})"
    return [
        Need(what, model_flags, 4 * _FLOAT32 * model_params),
        Need("one micro-batch's logits", ("batch_size", "block_size", "tokenizer"), logits),
        Need(
            "one micro-batch's residual streams",
            ("batch_size", "block_size", "n_embd", "n_layer"),
            _FLOAT32 * tokens * c.n_embd * c.n_layer,
        ),
        Need(
            "the step's token batches",
            ("grad_accum", "batch_size", "block_size"),
            2 * _INT64 * tokens * c.grad_accum,  # inputs and targets
        ),
        Need("one loss per eval batch", ("eval_iters",), _FLOAT32 * c.eval_iters),
    ]


def free_bytes(device: torch.device) -> int | None:
    """Memory free for the run on `device` (a CUDA GPU's free memory; on the CPU the host's
    available memory), None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_training_memory(config, vocab_size: int, device: torch.device, world_size: int = 1) -> None:
    """NotEnoughMemory (exit 1) naming the flags when the least one of the run's
    `world_size` processes needs exceeds what `device` has free."""
    needs = least_training_needs(config, vocab_size, world_size, chunked_head=device.type == "cpu")
    available = free_bytes(device)
    total = sum(need.bytes for need in needs)
    if available is None or total <= available:
        return
    largest = max(needs, key=lambda need: need.bytes)
    flags = " ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in largest.flags)
    if "tokenizer" in largest.flags:
        flags += f": {vocab_size:,} token ids"
    raise NotEnoughMemory(
        f"not enough memory on {device}: the run needs at least {_size(total)}, {_size(largest.bytes)} of it for "
        f"{largest.what} ({flags}), and {_size(available)} is free; choose smaller settings"
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{value:,.1f} {unit}"

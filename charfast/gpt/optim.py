"""The training run's optimizer policy: AdamW over decay groups (matrices and embeddings
decayed; never biases or LayerNorm gains), the learning-rate schedule, and the gradient
norm with its clipping."""

from __future__ import annotations

import math

import torch
from torch.distributed.tensor import DTensor

from charfast.gpt.config import TrainConfig


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at lr_decay_steps (by default the
    run's current max_steps, so a resume that extends max_steps stretches the decay), then
    flat."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    decay_steps = config.max_steps if config.lr_decay_steps is None else config.lr_decay_steps
    span = max(1, decay_steps - config.warmup_steps)
    return cosine_decay(min(1.0, (step - config.warmup_steps) / span), config.min_lr / config.lr)


def cosine_decay(progress: float, floor: float) -> float:
    """The schedules' decay (pretraining's and the study's fine-tuning's): from 1 at progress
    0 down a half cosine to `floor` at progress 1."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device, sharded: bool):
    """AdamW over the model's decay groups, fused on CUDA and CPU; with `sharded` (FSDP) each
    group split into its sharded (DTensor) and whole parameters, which one fused update
    cannot take together."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if sharded:
        groups = [
            {**group, "params": [p for p in group["params"] if isinstance(p, DTensor) == is_sharded]}
            for group in groups
            for is_sharded in (True, False)
        ]
        groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type in ("cuda", "cpu")
    )


def clip_gradients(model: torch.nn.Module, char_params: list, grad_clip: float) -> torch.Tensor:
    """[the gradient norm, the char encoder's share of its square] [2], on the device; the
    gradients are then clipped to `grad_clip` (when > 0) by that norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    # Sharded gradients (DTensors) and the replicated char encoder's: one norm over both,
    # each kind scaled on its own (one foreach call cannot take both kinds).
    groups = [[p for p in params if isinstance(p.grad, DTensor) == sharded] for sharded in (True, False)]
    groups = [group for group in groups if group]
    norms = [torch.nn.utils.get_total_norm([p.grad for p in group]) for group in groups]
    norms = [n.full_tensor() if isinstance(n, DTensor) else n for n in norms]
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
    char_grads = [p.grad for p in char_params if p.grad is not None]
    char = torch.nn.utils.get_total_norm(char_grads) if char_grads else torch.zeros_like(total)
    char_share = torch.where(total > 0, (char / total) ** 2, 0.0)
    if grad_clip > 0:
        for group in groups:
            torch.nn.utils.clip_grads_with_norm_(group, grad_clip, total)
    return torch.stack([total, char_share]).float()


class Schedule(torch.optim.lr_scheduler.LambdaLR):
    """The learning-rate schedule of `config` (lr_multiplier). Restored, it recomputes the
    learning rate from the current settings rather than taking the saved one: a resume may
    extend max_steps, and the schedule with it. (Its state_dict is LambdaLR's.)"""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig):
        super().__init__(optimizer, lambda step: lr_multiplier(step, config))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group, base_lr, multiplier in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base_lr * multiplier(self.last_epoch)

"""Data-parallel training with torchrun: which process this is, its device, and the few
collective operations the training loop needs (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the torchrun process group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """--device: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N"; a
    ValueError says what is wrong with any other."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process started on its own (before the group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        return Distributed(), device
    ddp = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda", ddp.local_rank) if device.type == "cuda" else device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ddp, device


def all_reduce_mean(value: torch.Tensor, ddp: Distributed) -> torch.Tensor:
    if ddp.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= ddp.world_size
    return value


@contextlib.contextmanager
def main_rank_first(ddp: Distributed):
    """Rank 0 fills the caches (BPE, tokens) first; the others then read them."""
    if ddp.enabled and not ddp.is_main:
        dist.barrier()
    yield
    if ddp.enabled and ddp.is_main:
        dist.barrier()


def any_rank(flag: bool, ddp: Distributed, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    value = torch.tensor(float(flag), device=device)
    if ddp.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)


def gather_to_main(value, ddp: Distributed) -> list | None:
    """[value of rank 0, rank 1, ...] on rank 0 (any picklable value), None on the others."""
    if not ddp.enabled:
        return [value]
    gathered = [None] * ddp.world_size
    dist.all_gather_object(gathered, value)
    return gathered if ddp.is_main else None


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(module: torch.nn.Module, ddp: Distributed) -> None:
    """Every rank takes rank 0's parameters and buffers (ranks initialise with their own
    seeds; DDP would copy only the parameters it manages, FSDP none)."""
    if ddp.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(params: list[torch.nn.Parameter], ddp: Distributed) -> None:
    """Average the gradients of `params` over the ranks in one collective (a parameter
    without a gradient counts as zeros): for the parameters the data-parallel wrapper
    leaves alone, such as the char encoder whose backward runs once per step."""
    if not ddp.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
    dist.all_reduce(flat)
    flat /= ddp.world_size
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p)


def shard_model(model: torch.nn.Module, replicated: list[torch.nn.Parameter]) -> None:
    """FSDP2: shard every transformer block, then the rest of the model, over the process
    group; `replicated` stay whole on every rank (their gradients: all_reduce_gradients)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model, ignored_params=set(replicated))


class WholeModelState:
    """A model's state_dict as a checkpoint holds it: the whole weights. A sharded (FSDP)
    model's are gathered onto rank 0's CPU (a collective: every rank calls state_dict)."""

    def __init__(self, model: torch.nn.Module, sharded: bool):
        self.model, self.sharded = model, sharded

    def state_dict(self) -> dict:
        if not self.sharded:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state_dict(self, state: dict) -> None:
        if not self.sharded:
            self.model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))


class WholeOptimizerState:
    """An optimizer's state_dict as a checkpoint holds it: of the whole model's parameters
    (gathered as WholeModelState's, and loaded after the model's)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool):
        self.model, self.optimizer, self.sharded = model, optimizer, sharded

    def state_dict(self) -> dict:
        if not self.sharded:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def load_state_dict(self, state: dict) -> None:
        if not self.sharded:
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True))

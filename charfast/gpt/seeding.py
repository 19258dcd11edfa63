"""Every random generator a training step may touch (torch's, CUDA's, numpy's, Python's):
seeded per process, and saved into and restored from a checkpoint so a resume draws what
an uninterrupted run would have drawn."""

from __future__ import annotations

import random

import numpy as np
import torch

from charfast.gpt.distributed import Distributed, gather_to_main


def seed_process(seed: int) -> None:
    """One seed for initialisation and dropout alike. Python's and numpy's generators too:
    the checkpoint saves their state, so a run's checkpoint is the same file whichever
    process (or Ray worker) ran it."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class ProcessRandomStates:
    """Every process's random states, as a checkpoint holds them: a list, rank 0's first
    (state_dict is a collective: every rank calls it; rank 0 gets the list). A resume by
    another number of processes takes them round robin, saying that dropout will differ."""

    def __init__(self, ddp: Distributed):
        self.ddp = ddp

    def state_dict(self) -> list[dict] | None:
        return gather_to_main(rng_state(), self.ddp)

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != self.ddp.world_size and self.ddp.is_main:
            print(
                f"note: checkpoint was written by {len(states)} process(es), this run has "
                f"{self.ddp.world_size}; dropout randomness will differ from an uninterrupted run"
            )
        set_rng_state(states[self.ddp.rank % len(states)])


def rng_state() -> dict:
    """Every random generator a training step may touch, as tensors and plain values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": np_pos,
            "has_gauss": np_has_gauss,
            "gauss": np_gauss,
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))

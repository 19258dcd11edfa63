"""Training checkpoints: one file, written atomically, loadable with weights_only=True.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes):

    format, step, config (dict), tokenizer (identity dict), model, optimizer, scheduler,
    data (sampler state), rng (torch, cuda, numpy, python)

so `torch.load(path, weights_only=True)` reads it and no code runs while loading.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from charfast.atomic import atomic_write

FORMAT = "charfast-ckpt-1"
REQUIRED_KEYS = ("format", "step", "config", "tokenizer", "model", "optimizer", "scheduler", "data", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write to a temp file in the same folder, then rename over `path`: a crash mid-write
    leaves the previous checkpoint intact."""
    missing = [k for k in REQUIRED_KEYS if k != "format" and k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks {missing}")
    with atomic_write(path) as f:
        writer = _WriteErrorRecorder(f)
        try:
            torch.save({"format": FORMAT, **state}, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            # torch reports a failed write (e.g. a full disk) as an assertion about file
            # positions; the OS error behind it says what happened.
            raise OSError(writer.error.errno, writer.error.strerror, str(path)) from writer.error


class _WriteErrorRecorder:
    """A binary file wrapper that remembers the first OSError of its writes."""

    def __init__(self, file):
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint at `path`, with weights_only=True; CheckpointError if it is missing,
    torn, foreign or lacks a field."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (a training run writes one, see --out-dir)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a charfast checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} has format {found!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return state


def check_compatible(state: dict, config: dict, tokenizer: dict, path: str | os.PathLike = "checkpoint") -> None:
    """CheckpointError naming every field where the checkpoint and this run disagree."""
    if state["tokenizer"] != tokenizer:
        raise CheckpointError(
            f"{path} was trained with tokenizer {state['tokenizer'].get('name')!r} "
            f"(n_vocab {state['tokenizer'].get('n_vocab')}), this run uses {tokenizer['name']!r} "
            f"(n_vocab {tokenizer['n_vocab']}); their tokens differ"
        )
    diffs = [
        f"{k}: checkpoint {state['config'].get(k)!r} vs this run {v!r}"
        for k, v in config.items()
        if state["config"].get(k) != v
    ]
    if diffs:
        raise CheckpointError(f"{path} does not match this run's settings: " + "; ".join(diffs))


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

"""Training checkpoints: one file, written atomically, loadable with weights_only=True.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes):

    format, step, config (dict), tokenizer (identity dict), model, optimizer, scheduler,
    data (sampler state), rng (torch, cuda, numpy, python),
    corpus_sha256 (the training text's content digest; its path may change),
    content_sha256 (SHA-256 of all of the above, written with it)

so `torch.load(path, weights_only=True)` reads it and no code runs while loading. A trainer
hands this module its parts (save_training, restore_training), each with state_dict and
load_state_dict; this module alone knows the file's format. Beside a
run's checkpoint, run.json holds its step, settings, tokenizer identity, corpus digest and
content digest as JSON, for readers that need no tensors (written after the checkpoint:
after a crash between the two it may be one save behind). The
content digest makes a checkpoint verify itself: a flipped bit or a torn copy is refused
on loading, naming the file, instead of being trained or evaluated on. (Checkpoints
written before it are read unverified.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

import torch

from charfast.atomic import atomic_write

FORMAT = "charfast-ckpt-1"
DIGEST_KEY = "content_sha256"
RUN_INFO_NAME = "run.json"  # beside a run's checkpoint: its summary for readers that need no tensors
RUN_INFO_KEYS = ("step", "config", "tokenizer", "corpus_sha256")  # what run.json summarises
TRAINING_PARTS = ("model", "optimizer", "scheduler", "data", "rng")  # the entries a trainer's parts fill
REQUIRED_KEYS = ("format", "step", "config", "tokenizer", *TRAINING_PARTS)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


def save_checkpoint(path: str | os.PathLike, state: dict, run_info: str | os.PathLike | None = None) -> None:
    """Write to a temp file in the same folder, then rename over `path`: a crash mid-write
    leaves the previous checkpoint intact. With `run_info`, that file (a run's run.json)
    then gets the checkpoint's summary (RUN_INFO_KEYS and its content digest)."""
    missing = [k for k in REQUIRED_KEYS if k != "format" and k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks {missing}")
    state = {"format": FORMAT, **state}
    state[DIGEST_KEY] = content_digest(state)
    with atomic_write(path) as f:
        writer = _WriteErrorRecorder(f)
        try:
            torch.save(state, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            # torch reports a failed write (e.g. a full disk) as an assertion about file
            # positions; the OS error behind it says what happened.
            raise OSError(writer.error.errno, writer.error.strerror, str(path)) from writer.error
    if run_info is not None:
        info = {key: state[key] for key in RUN_INFO_KEYS if key in state}
        info |= {"format": FORMAT, "checkpoint": Path(path).name, DIGEST_KEY: state[DIGEST_KEY]}
        with atomic_write(run_info) as f:
            f.write((json.dumps(info, indent=1) + "\n").encode("utf-8"))


class Stateful(Protocol):
    """A part of a training run that a checkpoint holds (the model, the optimizer, the
    schedule, the data position, the random states)."""

    def state_dict(self): ...

    def load_state_dict(self, state) -> None: ...


def save_training(
    path: str | os.PathLike, parts: dict[str, Stateful], header: dict, write: bool, run_info=None
) -> dict | None:
    """A training run's checkpoint from its `parts` (TRAINING_PARTS, each's state_dict an
    entry) and `header` (step, config, tokenizer, corpus_sha256 and the trackers' resume
    entries). Every process calls it, since a part may gather its state from all of them
    (FSDP's shards, every rank's random states); the one with `write` writes the file and
    run.json and returns the state written (None on the others)."""
    state = {name: part.state_dict() for name, part in parts.items()}
    if not write:
        return None
    state = {**header, **state}
    save_checkpoint(path, state, run_info=run_info)
    return state


def restore_training(state: dict, parts: dict[str, Stateful], path: str | os.PathLike) -> None:
    """Each part from its entry of the loaded checkpoint `state` (read from `path`, which a
    CheckpointError names when the weights do not fit the model built here)."""
    for name, part in parts.items():
        try:
            part.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as err:
            if name not in ("model", "optimizer"):
                raise
            raise CheckpointError(f"{path}: its weights do not fit this model: {err}") from err


def read_run_info(path: str | os.PathLike) -> dict | None:
    """A run.json's summary of its run's checkpoint; None when it is missing or unreadable
    (runs saved before run.json existed: read the checkpoint itself)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


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
    written = state.pop(DIGEST_KEY, None)
    if written is not None and written != content_digest(state):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its content does not match the digest written with it "
            "(a flipped bit or a torn copy)"
        )
    check_entries(state, path)
    return state


def content_digest(value) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every
    plain value, dict keys in a fixed order. Not the file's bytes: torch.save writes a fresh
    serialization id into every file, so the same state saved twice is two files."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}:".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r}|".encode())


def check_entries(state: dict, path: str | os.PathLike) -> None:
    """A CheckpointError naming the file and the entry when an entry lacks the form that the
    readers (training's resume, sampling, the study) rely on; checked once, on loading."""

    def need(ok: bool, entry: str, expected: str, value) -> None:
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else f"{type(value).__name__} {repr(value)[:60]}..."
            raise CheckpointError(f"checkpoint {path}: its {entry!r} entry must be {expected}, got {shown}")

    need(_is_int(state["step"], minimum=0), "step", "an int >= 0", state["step"])
    for entry in ("config", "tokenizer", "model", "optimizer", "scheduler", "data"):
        need(isinstance(state[entry], dict), entry, "a dict", state[entry])
    tokenizer, optimizer, scheduler, data = (state[k] for k in ("tokenizer", "optimizer", "scheduler", "data"))
    need(
        isinstance(tokenizer.get("name"), str) and _is_int(tokenizer.get("n_vocab"), minimum=1),
        "tokenizer",
        "a dict with a name and an n_vocab",
        tokenizer,
    )
    need(
        all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()),
        "model",
        "a state dict of tensors",
        state["model"],
    )
    need(
        isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list),
        "optimizer",
        "an optimizer's state dict (state, param_groups)",
        optimizer,
    )
    need(
        _is_int(scheduler.get("last_epoch"), minimum=0) and isinstance(scheduler.get("base_lrs"), list),
        "scheduler",
        "a scheduler's state dict (last_epoch, base_lrs)",
        scheduler,
    )
    need(_is_int(data.get("position"), minimum=0) and _is_int(data.get("seed")), "data", "a sampler state", data)
    rng = state["rng"]
    need(
        isinstance(rng, list) and rng and all(_is_rng_state(r) for r in rng),
        "rng",
        "a list of every process's random states (as rng_state() gives)",
        rng,
    )


def _is_int(value, minimum: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def _is_rng_state(state) -> bool:
    """Whether `state` has the form rng_state() gives, so set_rng_state can take it."""
    if not isinstance(state, dict) or not isinstance(state.get("torch"), torch.Tensor):
        return False
    numpy_state, python_state = state.get("numpy"), state.get("python")
    return (
        state["torch"].dtype == torch.uint8
        and isinstance(state.get("cuda"), list)
        and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in state["cuda"])
        and isinstance(numpy_state, dict)
        and isinstance(numpy_state.get("name"), str)
        and isinstance(numpy_state.get("keys"), torch.Tensor)
        and numpy_state["keys"].shape == (624,)
        and _is_int(numpy_state.get("pos"))
        and _is_int(numpy_state.get("has_gauss"))
        and isinstance(numpy_state.get("gauss"), float)
        and isinstance(python_state, dict)
        and _is_int(python_state.get("version"))
        and isinstance(python_state.get("internal"), list)
        and len(python_state["internal"]) == 625
        and all(_is_int(v) for v in python_state["internal"])
        and (python_state.get("gauss") is None or isinstance(python_state.get("gauss"), float))
    )


def check_compatible(
    state: dict,
    config: dict,
    tokenizer: dict,
    path: str | os.PathLike = "checkpoint",
    corpus_sha256: str | None = None,
) -> None:
    """CheckpointError naming every field where the checkpoint and this run disagree. The
    corpus is compared by content (corpus_sha256) where the checkpoint records it, so the
    same text under another path fits and other text under the same path does not; an
    older checkpoint's corpus is compared by its path."""
    by_content = corpus_sha256 is not None and "corpus_sha256" in state
    if by_content and state["corpus_sha256"] != corpus_sha256:
        raise CheckpointError(
            f"{path} was trained on another corpus than --data {config.get('data') or '(the embedded default)'} "
            f"holds now (content SHA-256 {state['corpus_sha256'][:12]}... there, {corpus_sha256[:12]}... here)"
        )
    if state["tokenizer"] != tokenizer:
        raise CheckpointError(
            f"{path} was trained with tokenizer {state['tokenizer'].get('name')!r} "
            f"(n_vocab {state['tokenizer'].get('n_vocab')}), this run uses {tokenizer['name']!r} "
            f"(n_vocab {tokenizer['n_vocab']}); their tokens differ"
        )
    diffs = [
        f"{k}: checkpoint {state['config'].get(k)!r} vs this run {v!r}"
        for k, v in config.items()
        if state["config"].get(k) != v and not (by_content and k == "data")
    ]
    if diffs:
        raise CheckpointError(f"{path} does not match this run's settings: " + "; ".join(diffs))

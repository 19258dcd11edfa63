"""A training run, run and read back.

run_training(config) trains (or, with resume, continues) the run `config` describes: what
`python -m charfast.train` does after parsing its flags, for callers holding settings.

load_run reads a trained run back for use: its settings, tokenizer, model and step, from
one read of its checkpoint, with no optimizer, training data or memory check (what
sampling, the study's probes and fine-tunings and an export need).

    run = load_run("out")                          # out/ckpt.pt
    run = load_run("out", ckpt="out/kept/step200.pt", device="cuda")
    logits, _ = run.model(idx)

A corpus BPE tokenizer (bpe:N) is retrained from the corpus (or read from its cache) and
checked against the identity the checkpoint recorded; `data` names where this machine
reads that corpus, which must hold the same text where the checkpoint knows it by content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

import torch

from charfast.entry_point import Stopped, signal_name
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.config import (
    CHECKPOINT_NAME,
    TrainConfig,
    build_model,
    check_checkpoint_settings,
    resolve_settings,
)
from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.distributed import init_distributed, is_main_process, resolve_device
from charfast.gpt.failures import Interrupted
from charfast.gpt.loop import train
from charfast.gpt.model import GPT
from charfast.gpt.out_dir import claim_out_dir
from charfast.gpt.tokenizer import get_tokenizer, tokenizer_identity
from charfast.gpt.trainer import Trainer


def run_training(config: TrainConfig, asked: Set[str] | None = None) -> int:
    """Train the run `config` describes to its max_steps: 0 when finished, 128 + N when
    signal N stopped it after saving (config.resume continues it). With config.resume, the
    settings in `asked` (default: all) must agree with its checkpoint's. Raises what
    charfast.gpt.failures reports (ValueError, CheckpointError, OSError, RunFailed)."""
    asked = {f.name for f in dataclasses.fields(TrainConfig)} if asked is None else set(asked)
    run = resolve_settings(config, asked)
    # Rank 0 holds --out-dir for the run's lifetime (the other ranks never write there).
    holding = claim_out_dir(run.config.out_dir) if is_main_process() else contextlib.nullcontext()
    with holding:
        ddp, device = init_distributed(run.config.device)
        try:
            trainer = Trainer(run, ddp, device)
        except Stopped as stopped:  # while reading data or building the model: nothing to save yet
            kept = f"{run.checkpoint_path} still holds step {run.checkpoint['step']}" if run.checkpoint else ""
            raise Interrupted(
                f"stopped by {signal_name(stopped.signum)} before the first step; " + (kept or "nothing was saved"),
                stopped.signum,
            ) from None
        return train(trainer)


@dataclass(frozen=True)
class LoadedRun:
    config: TrainConfig  # the run's settings, as its checkpoint holds them (data: where it was read here)
    encoding: object  # the tiktoken Encoding it was trained with
    model: GPT  # its weights, in eval mode, on `device`
    step: int  # the optimizer steps its checkpoint holds
    device: torch.device


def load_run(
    folder: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    data: str | None = None,
    state: dict | None = None,
) -> LoadedRun:
    """The run in `folder` as its checkpoint (default folder/ckpt.pt; or `ckpt`, e.g. weights
    kept at an earlier step, whose settings must be the run's) left it. data: the corpus's
    path on this machine (default: the one the run was trained from); state: the
    checkpoint, when the caller has read it already (one read per use). Every backend and
    attention computes the same function: the model takes the best for `device`, whatever
    the run was trained with."""
    path = Path(ckpt) if ckpt is not None else Path(folder) / CHECKPOINT_NAME
    state = load_checkpoint(path) if state is None else state
    config, encoding = load_tokenizer(state, path, data)
    embedded = state["model"].get("wte.weight")
    if embedded is not None and embedded.shape[0] != encoding.n_vocab:
        raise CheckpointError(
            f"{path}: its tokenizer {encoding.name} (and the char table built from it) has {encoding.n_vocab} ids, "
            f"but its weights embed {embedded.shape[0]}"
        )
    model = build_model(dataclasses.replace(config, char_backend="auto", attention="auto"), encoding)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: its weights do not fit its own settings: {' '.join(str(err).split())}") from err
    device = resolve_device(device) if isinstance(device, str) else device
    return LoadedRun(config, encoding, model.to(device).eval(), state["step"], device)


def load_tokenizer(state: dict, path: str | os.PathLike, data: str | None = None) -> tuple[TrainConfig, object]:
    """(the run's settings, its tiktoken Encoding) from a loaded checkpoint `state` (read from
    `path`, which messages name), the corpus read from `data` when given."""
    check_checkpoint_settings(state["config"], path)
    config = TrainConfig(**state["config"])
    if data is not None:
        config = dataclasses.replace(config, data=data)
    texts = tuple  # a tiktoken encoding is not trained: no texts
    if config.tokenizer.startswith("bpe:"):  # retrained from its corpus, or read from the cache
        try:
            index = index_corpus(config.data, config.val_fraction, config.seed, config.text_field)
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{path}: its tokenizer {config.tokenizer!r} is rebuilt from the training corpus "
                f"{config.data or '(the embedded default)'}, which cannot be read: {err}"
            ) from err
        if state.get("corpus_sha256") not in (None, index.sha256):
            raise CheckpointError(
                f"{path} was trained on another corpus than {config.data or '(the embedded default)'} holds now"
            )
        texts = functools.partial(index.texts, val=False)
    encoding = get_tokenizer(config.tokenizer, texts, cache_dir=config.cache_dir)
    if tokenizer_identity(encoding) != state["tokenizer"]:
        raise CheckpointError(
            f"{path}: the tokenizer rebuilt from its settings ({encoding.name}) is not the one it was "
            f"trained with ({state['tokenizer'].get('name')}); has its corpus changed?"
        )
    return config, encoding

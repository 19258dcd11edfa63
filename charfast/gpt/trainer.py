"""The parts of one training run on this process, and its step: data, model, optimizer,
schedule and random states, built from resolved settings and saved to and restored from
its checkpoint (charfast.gpt.checkpoint) as parts. The loop that drives it:
charfast.gpt.loop."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charfast.gpt.checkpoint import RUN_INFO_NAME, check_compatible, restore_training, save_training
from charfast.gpt.config import ResolvedConfig, build_model, computed_settings
from charfast.gpt.distributed import (
    Distributed,
    WholeModelState,
    WholeOptimizerState,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_from_main,
    main_rank_first,
    shard_model,
)
from charfast.gpt.late_reads import LateRead
from charfast.gpt.metrics import MetricsLog
from charfast.gpt.model import GPT, mixed_precision
from charfast.gpt.optim import Schedule, clip_gradients, make_optimizer
from charfast.gpt.run_data import prepare_data
from charfast.gpt.seeding import ProcessRandomStates, seed_process
from charfast.gpt.stop_request import StopRequest
from charfast.gpt.tracking import Trackers, tracker_resume_keys


class Trainer:
    """One training run: data, model, optimizer and its step, on this process's device.

    Built from resolved settings (charfast.gpt.config.resolve_config) and this process's
    place in the process group (charfast.gpt.distributed.init_distributed); with a
    checkpoint in `run`, everything is restored from it first.
    """

    def __init__(self, run: ResolvedConfig, ddp: Distributed, device: torch.device):
        self.config = config = run.config
        self.ddp, self.device = ddp, device
        self.out_dir = Path(config.out_dir)
        self.ckpt_path = run.checkpoint_path
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        # One seed per rank: DDP hands every rank rank 0's initial weights, and dropout
        # masks should differ between ranks.
        seed_process(config.seed + ddp.rank)
        with main_rank_first(ddp):
            self.data = prepare_data(config, ddp)
        self.encoding = self.data.encoding
        self.model = build_model(config, self.encoding).to(device)
        self.model.check_ids = False  # the ids come from our own tokenizer: no read back per step
        char_emb = self.model.char_emb
        if char_emb is not None:
            # The weights change between evals, and an eval batch needs only a few distinct
            # tokens: rebuilding the whole-vocabulary cache each time would cost more.
            char_emb.inference_cache = False
        # The char encoder stays out of DDP's reducer and FSDP's shards: its backward runs
        # once per step (after the micro-batches') and its gradients are averaged then.
        self.char_params = [] if char_emb is None else list(char_emb.parameters())
        self.sharded = ddp.enabled and config.parallel == "fsdp"
        broadcast_from_main(self.model, ddp)
        if self.sharded:
            shard_model(self.model, self.char_params)
        self.optimizer = make_optimizer(self.model, config, device, self.sharded)
        self.scheduler = Schedule(self.optimizer, config)
        self.step = 0
        self.saved_step: int | None = None  # the step ckpt.pt holds
        self.trackers: Trackers | None = None  # rank 0's, while the loop runs with --log
        # What the trackers need to continue their runs (the W&B run id), kept in the checkpoint.
        self.tracker_state = {} if run.checkpoint is None else _tracker_state(run.checkpoint)
        # Under FSDP, rank 0's copy of the whole weights the last save gathered: samples are
        # drawn from an unsharded model built from it, so no rank waits in a collective.
        self._whole_weights: dict | None = None
        if run.checkpoint is not None:
            self._restore(run.checkpoint)
        self.train_model = self._wrap_model()

    def _wrap_model(self) -> torch.nn.Module:
        model = self.model
        if self.config.compile == "on" or (self.config.compile == "auto" and self.device.type == "cuda"):
            model = torch.compile(model)
        if self.ddp.enabled and not self.sharded:
            char = {id(p) for p in self.char_params}
            ignored = [name for name, p in model.named_parameters() if id(p) in char]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        return model

    # ---------------------------------------------------------------- checkpoints
    def _parts(self) -> dict:
        """What the checkpoint holds of this run, each with state_dict / load_state_dict."""
        return {
            "model": WholeModelState(self.model, self.sharded),
            "optimizer": WholeOptimizerState(self.model, self.optimizer, self.sharded),
            "scheduler": self.scheduler,
            "data": self.data.train_batches,
            "rng": ProcessRandomStates(self.ddp),
        }

    def save(self) -> None:
        """The checkpoint of this step (every rank calls it; rank 0 writes)."""
        if self.trackers is not None:  # every step up to the checkpoint's is on disk before it
            self.trackers.flush()
            self.tracker_state = self.trackers.resume_state()
        header = {
            "step": self.step,
            "config": dataclasses.asdict(self.config),
            "tokenizer": self.data.tokenizer_id,
            "corpus_sha256": self.data.corpus_sha256,
            **self.tracker_state,
        }
        run_info = self.out_dir / RUN_INFO_NAME
        state = save_training(self.ckpt_path, self._parts(), header, write=self.ddp.is_main, run_info=run_info)
        if self.sharded and state is not None:
            self._whole_weights = state["model"]
        self.saved_step = self.step

    def _restore(self, state: dict) -> None:
        settings = computed_settings(self.config)
        check_compatible(state, settings, self.data.tokenizer_id, self.ckpt_path, self.data.corpus_sha256)
        restore_training(state, self._parts(), self.ckpt_path)
        self.step = self.saved_step = int(state["step"])

    # ---------------------------------------------------------------- steps
    def train_step(self, stop: StopRequest | None = None) -> LateRead:
        """One optimizer step over grad_accum micro-batches. Returns, to be read later, [how
        many ranks had a stop request by the step's end, the loss averaged over micro-batches
        and ranks, the gradient norm before clipping, the char encoder's share of its
        square]: nothing in the step waits for the device."""
        model, c = self.train_model, self.config
        model.train()
        # Every micro-batch of the step is drawn first (the sampler is a counter, so this
        # draws exactly what drawing them one by one would).
        batches = [self.data.train_batches.next(self.device) for _ in range(c.grad_accum)]
        loss_sum = torch.zeros((), device=self.device)
        with self._char_once_per_step([x for x, _ in batches]):
            for micro, (x, y) in enumerate(batches):
                with self._gradient_sync(last=micro == c.grad_accum - 1):
                    _, loss = model(x, y, return_logits=False)
                    (loss / c.grad_accum).backward()
                loss_sum += loss.detach()
        all_reduce_gradients(self.char_params, self.ddp)
        gradient = clip_gradients(self.model, self.char_params, c.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        stopping = torch.full((1,), float(stop is not None and stop.requested), device=self.device)
        numbers = torch.cat([stopping, (loss_sum / c.grad_accum).reshape(1), gradient])
        if self.ddp.enabled:
            dist.all_reduce(numbers)  # [ranks that asked to stop, sums over the ranks]
            numbers[1:] /= self.ddp.world_size  # the gradient's numbers are the same on every rank
        return LateRead(numbers)

    def _char_once_per_step(self, inputs: list[torch.Tensor]) -> contextlib.AbstractContextManager:
        """With several micro-batches, the char embedding runs forward once over all their ids
        and backward once when the block ends (CharEmbedding.once_per_step); entered under
        the model's precision policy, as its forward runs."""
        char_emb = self.model.char_emb
        block = contextlib.ExitStack()
        if char_emb is not None and len(inputs) > 1:
            with mixed_precision(self.device):
                block.enter_context(char_emb.once_per_step(inputs))
        return block

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Gradients are averaged over the ranks in the last micro-batch's backward only."""
        if not self.ddp.enabled:
            return contextlib.nullcontext()
        if self.sharded:
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last else self.train_model.no_sync()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the same eval_iters held-out batches at every evaluation."""
        self.model.eval()
        losses = torch.zeros(self.config.eval_iters, device=self.device)
        for i in range(self.config.eval_iters):
            x, y = self.data.val_batches.batch(i, self.device)
            losses[i] = self.model(x, y, return_logits=False)[1]
        return float(all_reduce_mean(losses.mean(), self.ddp))

    def sampling_model(self) -> GPT:
        """Rank 0's model to sample from: the model itself; under FSDP, whose parameters are
        shards, an unsharded model of the whole weights the last save gathered."""
        if not self.sharded:
            return self.model
        whole = build_model(self.config, self.encoding)
        whole.load_state_dict(self._whole_weights)
        return whole.to(self.device)


def _tracker_state(checkpoint: dict) -> dict:
    return {key: checkpoint[key] for key in tracker_resume_keys() if key in checkpoint}

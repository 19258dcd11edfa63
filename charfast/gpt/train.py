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
policy), the process group from charfast.gpt.distributed; this module is the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charfast.entry_point import STOP_SIGNALS, Stopped, signal_name
from charfast.gpt.checkpoint import (
    RUN_INFO_NAME,
    CheckpointError,
    check_compatible,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from charfast.gpt.config import ResolvedConfig, build_model, computed_settings, resolve_config
from charfast.gpt.data import TokenBatches, corpus_digest, load_documents, split_documents, tokenize
from charfast.gpt.distributed import (
    Distributed,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_from_main,
    gather_to_main,
    init_distributed,
    is_main_process,
    main_rank_first,
    shard_model,
    shutdown,
)
from charfast.gpt.failures import Interrupted, RunFailed, run_cli
from charfast.gpt.gpu_peaks import peak_flops
from charfast.gpt.late_reads import LateRead, StepTime
from charfast.gpt.metrics import MetricsLog
from charfast.gpt.model import GPT, mixed_precision
from charfast.gpt.optim import clip_gradients, lr_multiplier, make_optimizer
from charfast.gpt.out_dir import claim_out_dir
from charfast.gpt.plotting import plot_loss_curve
from charfast.gpt.sample import stream_sample
from charfast.gpt.tokenizer import get_tokenizer, tokenizer_identity
from charfast.gpt.tracking import Trackers, parse_trackers


class StopRequest:
    """While active, the first stop signal (Ctrl-C's SIGINT, SIGTERM, SIGHUP) only asks the
    run to stop: the loop finishes its step and saves. A second one stops at once (raises
    Stopped), which leaves the last checkpoint written as it was. (On Ctrl-C torchrun
    signals its workers too.)"""

    def __init__(self):
        self.signal: int | None = None  # the signal that asked to stop
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise Stopped(signum)
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingDiverged(RunFailed):
    """The loss stopped being a finite number."""


class Trainer:
    """One training run: data, model, optimizer and the loop, on this process's device.

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
        # One seed per rank for initialisation and dropout alike: DDP hands every rank
        # rank 0's initial weights, and dropout masks should differ between ranks.
        torch.manual_seed(config.seed + ddp.rank)
        # Python's and numpy's generators too: the checkpoint saves their state, so a run's
        # checkpoint is the same file whichever process (or Ray worker) ran it.
        random.seed(config.seed + ddp.rank)
        np.random.seed((config.seed + ddp.rank) % 2**32)
        with main_rank_first(ddp):
            self._prepare_data()
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
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_multiplier(s, config))
        self.step = 0
        self.saved_step: int | None = None  # the step ckpt.pt holds
        self.trackers: Trackers | None = None  # rank 0's, while run() runs with --log
        # Under FSDP, rank 0's copy of the whole weights the last save gathered: samples are
        # drawn from an unsharded model built from it, so no rank waits in a collective.
        self._whole_weights: dict | None = None
        # The W&B run this training logs to, kept in the checkpoint so a resume continues it.
        self.wandb_id: str | None = None if run.checkpoint is None else run.checkpoint.get("wandb_run_id")
        if run.checkpoint is not None:
            self._restore(run.checkpoint)
        self.train_model = self._wrap_model()

    # ---------------------------------------------------------------- setup
    def _prepare_data(self) -> None:
        c = self.config
        documents = load_documents(c.data)
        self.corpus_sha256 = corpus_digest(documents)  # the run's corpus by content (checkpoints record it)
        train_docs, val_docs = split_documents(documents, c.val_fraction, seed=c.seed)
        show = c.progress and self.ddp.is_main
        self.encoding = get_tokenizer(c.tokenizer, [text for _, text in train_docs], cache_dir=c.cache_dir)
        self.tokenizer_id = tokenizer_identity(self.encoding)
        train_tokens = tokenize(self.encoding, train_docs, "train", cache_dir=c.cache_dir, show_progress=show)
        val_tokens = tokenize(self.encoding, val_docs, "val", cache_dir=c.cache_dir, show_progress=show)
        shard = dict(rank=self.ddp.rank, world_size=self.ddp.world_size)
        self.train_batches = TokenBatches(train_tokens, c.block_size, c.batch_size, seed=c.seed, **shard)
        self.val_batches = TokenBatches(val_tokens, c.block_size, c.batch_size, seed=c.seed + 1, **shard)

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
    def save(self) -> None:
        rngs = gather_to_main(rng_state(), self.ddp)  # every rank's, for an exact resume
        model_state, optimizer_state = self._full_state()
        if self.ddp.is_main:
            state = {
                "step": self.step,
                "config": dataclasses.asdict(self.config),
                "tokenizer": self.tokenizer_id,
                "model": model_state,
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "data": self.train_batches.state_dict(),
                "rng": rngs,
                "corpus_sha256": self.corpus_sha256,
            }
            if self.wandb_id is not None:
                state["wandb_run_id"] = self.wandb_id
            if self.trackers is not None:  # every step up to the checkpoint's is on disk before it
                self.trackers.flush()
            save_checkpoint(self.ckpt_path, state, run_info=self.out_dir / RUN_INFO_NAME)
            if self.sharded:
                self._whole_weights = model_state
        self.saved_step = self.step

    def _full_state(self) -> tuple[dict, dict]:
        """(model, optimizer) state dicts of the whole model; sharded, gathered on rank 0
        (a collective: every rank calls it)."""
        if not self.sharded:
            return self.model.state_dict(), self.optimizer.state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(self.model, options=options),
            get_optimizer_state_dict(self.model, self.optimizer, options=options),
        )

    def _load_full_state(self, model_state: dict, optimizer_state: dict) -> None:
        if not self.sharded:
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(optimizer_state)
            return
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=options)
        set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=options)

    def _restore(self, state: dict) -> None:
        check_compatible(
            state, computed_settings(self.config), self.tokenizer_id, self.ckpt_path, corpus_sha256=self.corpus_sha256
        )
        try:
            self._load_full_state(state["model"], state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.ckpt_path}: its weights do not fit this model: {err}") from err
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule is a function of the current settings (a resume may extend max_steps):
        # the restored learning rate is recomputed from it rather than taken as saved.
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * lr_multiplier(self.scheduler.last_epoch, self.config)
        self.train_batches.load_state_dict(state["data"])
        self.step = self.saved_step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) != self.ddp.world_size and self.ddp.is_main:
            print(
                f"note: checkpoint was written by {len(rngs)} process(es), this run has "
                f"{self.ddp.world_size}; dropout randomness will differ from an uninterrupted run"
            )
        set_rng_state(rngs[self.ddp.rank % len(rngs)])

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
        batches = [self.train_batches.next(self.device) for _ in range(c.grad_accum)]
        loss_sum = torch.zeros((), device=self.device)
        with self._char_once_per_step([x for x, _ in batches]):
            for micro, (x, y) in enumerate(batches):
                with self._gradient_sync(last=micro == c.grad_accum - 1):
                    _, loss = model(x, y)
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

    def sampling_model(self) -> GPT:
        """Rank 0's model to sample from: the model itself; under FSDP, whose parameters are
        shards, an unsharded model of the whole weights the last save gathered."""
        if not self.sharded:
            return self.model
        whole = build_model(self.config, self.encoding)
        whole.load_state_dict(self._whole_weights)
        return whole.to(self.device)

    def log_eval_sample(self) -> None:
        """After an eval step's save, rank 0: a sample to the trackers (with --log and
        --sample-tokens > 0), drawn with the random generators forked and seeded by the
        step, so training's random numbers are untouched."""
        c = self.config
        if self.trackers is None or not c.sample_tokens:
            return
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(c.seed + self.step)
            model = self.sampling_model()
            pieces = stream_sample(model, self.encoding, c.sample_prompt, c.sample_tokens, c.temperature, c.top_k)
            self.trackers.text("sample", c.sample_prompt + "".join(pieces), self.step)
        self.trackers.flush()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the same eval_iters held-out batches at every evaluation."""
        self.model.eval()
        losses = torch.zeros(self.config.eval_iters, device=self.device)
        for i in range(self.config.eval_iters):
            x, y = self.val_batches.batch(i, self.device)
            losses[i] = self.model(x, y)[1]
        return float(all_reduce_mean(losses.mean(), self.ddp))

    # ---------------------------------------------------------------- the loop
    def run(self) -> int:
        """Train to max_steps; 0 when finished, 128 + the signal's number when a signal
        stopped it (after saving). A non-finite loss raises TrainingDiverged, saving nothing."""
        c = self.config
        if self.ddp.is_main:
            self.metrics.start(resume_step=self.step if c.resume else None)
        try:
            if self.ddp.is_main and c.log:
                self.trackers = self._start_trackers()
            return self._run()
        finally:
            if self.trackers is not None:
                self.trackers.close()
                self.trackers = None

    def _start_trackers(self) -> Trackers:
        c = self.config
        trackers = Trackers(
            parse_trackers(c.log),
            self.out_dir,
            dataclasses.asdict(c),
            resume_step=self.step if c.resume else None,
            name=c.wandb_run_name,
            wandb_id=self.wandb_id,
            project=c.wandb_project,
            replay=self.metrics.records if c.resume else (),
        )
        self.wandb_id = trackers.wandb_id or self.wandb_id
        return trackers

    def _run(self) -> int:
        c = self.config
        tokens_per_step = c.batch_size * c.block_size * c.grad_accum * self.ddp.world_size
        peak = peak_flops(self.device)
        if self.ddp.is_main:
            print(
                f"charfast.train: arch={c.arch} params={self.model.num_parameters():,} tokenizer={self.encoding.name} "
                f"(n_vocab {self.encoding.n_vocab}) device={self.device} world_size={self.ddp.world_size} "
                f"train_tokens={len(self.train_batches.tokens):,} val_tokens={len(self.val_batches.tokens):,}"
                + (f" resuming at step {self.step}" if self.step else "")
            )
        bar = tqdm(
            total=c.max_steps,
            initial=self.step,
            disable=not (c.progress and self.ddp.is_main),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        with StopRequest() as stop:
            try:
                first_step = self.step
                self._train_until_done_or_stopped(stop, bar, tokens_per_step, peak)
                bar.close()
                self.save()  # the last step's, or the one a signal asked for
                if self.step == c.max_steps > first_step and not stop.requested:
                    self.log_eval_sample()  # the last step is an eval step, saved only now
                written = self._finish(stop) if self.ddp.is_main and not stop.requested else []
                if self.sharded:  # the ranks leave together: under FSDP a rank that tears the group
                    dist.barrier()  # down while rank 0 still samples aborts (seen on gloo)
            except Stopped as second:
                raise Interrupted(
                    f"stopped at once by a second {signal_name(second.signum)}; {self._kept()}", second.signum
                ) from None
        if stop.requested:
            if self.ddp.is_main:
                print(f"interrupted by {signal_name(stop.signal)}: {self._stopped_after(written)}")
            return 128 + stop.signal
        return 0

    def _stopped_after(self, written: list[Path]) -> str:
        """What a stop signal left, in words: the saved step, and what the finish skipped."""
        saved = f"saved step {self.step} to {self.ckpt_path}"
        if self.step < self.config.max_steps:
            return f"{saved}; continue with --resume"
        skipped = [name for name in ("loss.png", "sample.txt") if self.out_dir / name not in written]
        skipped = [n for n in skipped if n != "sample.txt" or self.config.sample_tokens]
        return f"training had finished; {saved}" + (f"; skipped {', '.join(skipped)}" if skipped else "")

    def _train_until_done_or_stopped(self, stop: StopRequest, bar, tokens_per_step: int, peak: float | None) -> None:
        """Steps until max_steps or a stop signal on any rank (then stop.signal is set on all).
        Each step's loss is read one step late, after the next step is queued, so the host
        never waits for the device mid-run; eval and stop steps read theirs at once. With
        several ranks, a stop request travels with those numbers: every rank sees it after
        the same step."""
        c = self.config
        log = _StepLog(self, bar, tokens_per_step, peak)
        pending = None  # (record, LateRead, StepTime) of the last step, not read yet
        while self.step < c.max_steps:
            lr = self.optimizer.param_groups[0]["lr"]
            took = StepTime(self.device)
            numbers = self.train_step(stop)
            took.stop()
            stopping = pending is not None and log.write(*pending)
            stopping = stopping or (not self.ddp.enabled and stop.requested)  # alone: no rank to agree with
            pending = ({"step": self.step, "lr": lr}, numbers, took)
            evaluating = self.step % c.eval_interval == 0 or self.step == c.max_steps
            if evaluating or stopping:
                stopping = log.write(*pending, evaluate=evaluating) or stopping
                pending = None
            if stopping and self.step < c.max_steps:
                stop.signal = stop.signal or signal.SIGINT  # another rank's signal: Ctrl-C reaches them all
                return
            if evaluating and self.step < c.max_steps:
                self.save()
                self.log_eval_sample()

    def _kept(self) -> str:
        """What the checkpoint holds now, in words."""
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"{self.ckpt_path} holds step {self.saved_step}; continue with --resume"

    def check_finite(self, record: dict) -> None:
        for name in ("train_loss", "val_loss"):
            if name in record and not math.isfinite(record[name]):
                kept = (
                    f"{self.ckpt_path} still holds step {self.saved_step}"
                    if self.saved_step is not None
                    else "no checkpoint was written"
                )
                raise TrainingDiverged(
                    f"the {name.replace('_', ' ')} is {record[name]} at step {record['step']}: training stopped "
                    f"without saving it; {kept} (try a lower --lr or a smaller --grad-clip)"
                )

    def _finish(self, stop: StopRequest) -> list[Path]:
        """Rank 0, after the last step is saved: the loss plot, a sample and a summary; a stop
        signal meanwhile ends it early. Returns the files written."""
        records = self.metrics.records
        written = [self.metrics.path, self.ckpt_path]
        plot_path = self.out_dir / "loss.png"
        plot_loss_curve(records, plot_path, title=f"{self.config.arch} · {self.encoding.name}")
        written.append(plot_path)
        if self.config.sample_tokens and not stop.requested:
            model = self.sampling_model()
            if model.char_emb is not None:  # the weights are final now: one vocabulary pass, then lookups
                model.char_emb.inference_cache = True
            c = self.config
            pieces = []
            for piece in stream_sample(model, self.encoding, c.sample_prompt, c.sample_tokens, c.temperature, c.top_k):
                if stop.requested:
                    return written
                pieces.append(piece)
            sample = c.sample_prompt + "".join(pieces)
            sample_path = self.out_dir / "sample.txt"
            sample_path.write_text(sample, encoding="utf-8")
            written.append(sample_path)
            print("---- sample ----\n" + sample + "\n----------------")
        if stop.requested:
            return written
        if records:  # none when a resume of a finished run found no metrics.jsonl
            first, last = records[0], records[-1]
            print(
                f"train_loss {first['train_loss']:.3f} (step {first['step']}) -> {last['train_loss']:.3f} "
                f"(step {last['step']})" + (f", val_loss {last['val_loss']:.3f}" if "val_loss" in last else "")
            )
        print("wrote " + ", ".join(str(p) for p in written))
        return written


class _StepLog:
    """Writes each step's metrics line once its numbers are read, timed by the step's own
    StepTime (never by the interval between reads, which one step late are uneven)."""

    def __init__(self, trainer: Trainer, bar, tokens_per_step: int, peak: float | None):
        self.trainer, self.bar = trainer, bar
        self.tokens_per_step, self.peak = tokens_per_step, peak

    def write(self, record: dict, numbers: LateRead, took: StepTime, evaluate: bool = False) -> bool:
        """Completes and writes `record` (its step's numbers, and val_loss when evaluate);
        returns whether some rank asked to stop."""
        trainer = self.trainer
        ranks_stopping, loss, grad_norm, char_grad_share = numbers.read()
        elapsed = took.seconds()
        record = {**record, "train_loss": loss, "tokens_per_s": self.tokens_per_step / elapsed}
        record["ms_per_step"] = 1000 * elapsed
        record["grad_norm"] = grad_norm
        if self.peak:
            world = trainer.ddp.world_size
            record["mfu"] = trainer.model.flops_per_token() * record["tokens_per_s"] / (self.peak * world)
        if trainer.char_params:
            record["char_grad_share"] = char_grad_share
        if evaluate:
            record["val_loss"] = trainer.evaluate()
        trainer.check_finite(record)
        if trainer.ddp.is_main:
            trainer.metrics.append(record)
        if trainer.trackers is not None:  # the record metrics.jsonl has just taken
            trainer.trackers.metrics(record)
        self.bar.update(1)
        self.bar.set_postfix_str(_postfix(record))
        return ranks_stopping > 0


def _postfix(record: dict) -> str:
    text = (
        f"loss {record['train_loss']:.3f} | {record['tokens_per_s']:,.0f} tok/s | {record['ms_per_step']:.0f} ms/step"
    )
    if "mfu" in record:
        text += f" | mfu {100 * record['mfu']:.1f}%"
    if "val_loss" in record:
        text += f" | val {record['val_loss']:.3f}"
    return text


def main(argv: list[str] | None = None) -> int:
    """The CLI; exit codes as in charfast.gpt.failures (0: training finished; 128 + N: signal
    N stopped it after saving, --resume continues)."""

    def train() -> int:
        run = resolve_config(argv)
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
            return trainer.run()

    try:
        return run_cli("charfast.train", train)
    finally:
        shutdown()

"""The training loop: a Trainer's steps to max_steps, with evaluation, metrics, trackers and
checkpoints on the way, and what a stop signal, a diverged loss or the end of the run
leaves behind."""

from __future__ import annotations

import dataclasses
import math
import signal

import torch
import torch.distributed as dist
from tqdm import tqdm

from charfast.entry_point import Stopped, signal_name
from charfast.gpt.failures import Interrupted, RunFailed
from charfast.gpt.gpu_peaks import peak_flops
from charfast.gpt.late_reads import LateRead, StepTime
from charfast.gpt.metrics import StepRates, postfix, step_record
from charfast.gpt.run_outputs import finish, stopped_after
from charfast.gpt.sampling import stream_sample
from charfast.gpt.stop_request import StopRequest
from charfast.gpt.tracking import TrackedRun, Trackers, parse_trackers
from charfast.gpt.trainer import Trainer


class TrainingDiverged(RunFailed):
    """The loss stopped being a finite number."""


def train(trainer: Trainer) -> int:
    """Train to max_steps; 0 when finished, 128 + the signal's number when a signal stopped
    it (after saving). A non-finite loss raises TrainingDiverged, saving nothing."""
    c, ddp = trainer.config, trainer.ddp
    if ddp.is_main:
        trainer.metrics.start(resume_step=trainer.step if c.resume else None)
    try:
        if ddp.is_main and c.log:
            trainer.trackers = _start_trackers(trainer)
        return _train(trainer)
    finally:
        if trainer.trackers is not None:
            trainer.trackers.close()
            trainer.trackers = None


def _start_trackers(trainer: Trainer) -> Trackers:
    c = trainer.config
    run = TrackedRun(
        trainer.out_dir,
        dataclasses.asdict(c),
        resume_step=trainer.step if c.resume else None,
        name=c.wandb_run_name,
        project=c.wandb_project,
        resume_state=trainer.tracker_state,
        replay=trainer.metrics.records if c.resume else (),
    )
    return Trackers(parse_trackers(c.log), run)


def _train(trainer: Trainer) -> int:
    c, ddp = trainer.config, trainer.ddp
    if ddp.is_main:
        data = trainer.data
        print(
            f"charfast.train: arch={c.arch} params={trainer.model.num_parameters():,} tokenizer={data.encoding.name} "
            f"(n_vocab {data.encoding.n_vocab}) device={trainer.device} world_size={ddp.world_size} "
            f"train_tokens={len(data.train_batches.tokens):,} val_tokens={len(data.val_batches.tokens):,}"
            + (f" resuming at step {trainer.step}" if trainer.step else "")
        )
    show = c.progress and ddp.is_main
    bar = tqdm(total=c.max_steps, initial=trainer.step, disable=not show, desc="train", unit="step", dynamic_ncols=True)
    with StopRequest() as stop:
        try:
            first_step = trainer.step
            _steps_until_done_or_stopped(trainer, stop, bar)
            bar.close()
            trainer.save()  # the last step's, or the one a signal asked for
            if trainer.step == c.max_steps > first_step and not stop.requested:
                log_eval_sample(trainer)  # the last step is an eval step, saved only now
            written = finish(trainer, stop) if ddp.is_main and not stop.requested else []
            if trainer.sharded:  # the ranks leave together: under FSDP a rank that tears the group
                dist.barrier()  # down while rank 0 still samples aborts (seen on gloo)
        except Stopped as second:
            raise Interrupted(
                f"stopped at once by a second {signal_name(second.signum)}; {_kept(trainer)}", second.signum
            ) from None
    if stop.requested:
        if ddp.is_main:
            print(f"interrupted by {signal_name(stop.signal)}: {stopped_after(trainer, written)}")
        return 128 + stop.signal
    return 0


def _steps_until_done_or_stopped(trainer: Trainer, stop: StopRequest, bar) -> None:
    """Steps until max_steps or a stop signal on any rank (then stop.signal is set on all).
    Each step's loss is read one step late, after the next step is queued, so the host
    never waits for the device mid-run; eval and stop steps read theirs at once. With
    several ranks, a stop request travels with those numbers: every rank sees it after
    the same step."""
    c, ddp = trainer.config, trainer.ddp
    rates = _step_rates(trainer)
    pending = None  # (step, lr, LateRead, StepTime) of the last step, not read yet
    while trainer.step < c.max_steps:
        lr = trainer.lr
        took = StepTime(trainer.device)
        numbers = trainer.train_step(stop)
        took.stop()
        stopping = pending is not None and _log_step(trainer, bar, rates, *pending)
        stopping = stopping or (not ddp.enabled and stop.requested)  # alone: no rank to agree with
        pending = (trainer.step, lr, numbers, took)
        evaluating = trainer.step % c.eval_interval == 0 or trainer.step == c.max_steps
        if evaluating or stopping:
            stopping = _log_step(trainer, bar, rates, *pending, evaluate=evaluating) or stopping
            pending = None
        if stopping and trainer.step < c.max_steps:
            stop.signal = stop.signal or signal.SIGINT  # another rank's signal: Ctrl-C reaches them all
            return
        if evaluating and trainer.step < c.max_steps:
            trainer.save()
            log_eval_sample(trainer)


def _step_rates(trainer: Trainer) -> StepRates:
    c, world = trainer.config, trainer.ddp.world_size
    peak = peak_flops(trainer.device)
    return StepRates(
        tokens_per_step=c.batch_size * c.block_size * c.grad_accum * world,
        flops_per_token=trainer.model.flops_per_token(),
        peak_flops=peak * world if peak else None,
        has_char=bool(trainer.char_params),
    )


def _log_step(
    trainer: Trainer, bar, rates: StepRates, step: int, lr: float, numbers: LateRead, took: StepTime, evaluate=False
) -> bool:
    """Completes and writes step `step`'s record (its numbers, and val_loss when evaluate),
    timed by the step's own StepTime (never by the interval between reads, which one step
    late are uneven); returns whether some rank asked to stop."""
    numbers = numbers.read()
    record = step_record(step, lr, numbers, took.seconds(), rates)
    if evaluate:
        record["val_loss"] = trainer.evaluate()
    _check_finite(trainer, record)
    if trainer.ddp.is_main:
        trainer.metrics.append(record)
    if trainer.trackers is not None:  # the record metrics.jsonl has just taken
        trainer.trackers.metrics(record)
    bar.update(1)
    bar.set_postfix_str(postfix(record))
    return numbers[0] > 0


def _check_finite(trainer: Trainer, record: dict) -> None:
    for name in ("train_loss", "val_loss"):
        if name in record and not math.isfinite(record[name]):
            raise TrainingDiverged(
                f"the {name.replace('_', ' ')} is {record[name]} at step {record['step']}: training stopped "
                f"without saving it; {_kept(trainer, still=True)} (try a lower --lr or a smaller --grad-clip)"
            )


def _kept(trainer: Trainer, still: bool = False) -> str:
    """What the checkpoint holds now, in words."""
    if trainer.saved_step is None:
        return "no checkpoint was written"
    if still:
        return f"{trainer.ckpt_path} still holds step {trainer.saved_step}"
    return f"{trainer.ckpt_path} holds step {trainer.saved_step}; continue with --resume"


def log_eval_sample(trainer: Trainer) -> None:
    """After an eval step's save, rank 0: a sample to the trackers (with --log and
    --sample-tokens > 0), drawn with the random generators forked and seeded by the step,
    so training's random numbers are untouched."""
    c = trainer.config
    if trainer.trackers is None or not c.sample_tokens:
        return
    devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(c.seed + trainer.step)
        model = trainer.sampling_model()
        pieces = stream_sample(model, trainer.encoding, c.sample_prompt, c.sample_tokens, c.temperature, c.top_k)
        trainer.trackers.text("sample", c.sample_prompt + "".join(pieces), trainer.step)
    trainer.trackers.flush()

"""Train a GPT (char-aware or baseline): `python -m charfast.train [flags]`.

With no flags it trains the char-aware model on the embedded Shakespeare corpus with a
512-token BPE trained on it, a preset that finishes in minutes on a laptop CPU. Scale out
with `torchrun --nproc_per_node N -m charfast.train ...` (gloo on CPU, nccl on CUDA).

Writes into --out-dir: metrics.jsonl (one JSON object per step: step, train_loss, lr,
tokens_per_s, ms_per_step [, val_loss, mfu]), ckpt.pt (see charfast.gpt.checkpoint),
loss.png and sample.txt. --resume continues from ckpt.pt exactly; Ctrl-C saves and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from charfast.gpt.bpe import END_OF_TEXT
from charfast.gpt.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from charfast.gpt.data import TokenBatches, load_documents, split_documents, tokenize
from charfast.gpt.gpu_peaks import gpu_peaks
from charfast.gpt.model import ARCHS, ATTENTION_IMPLS, GPT, GPTConfig
from charfast.gpt.plotting import plot_loss_curve
from charfast.gpt.tokenizer import get_tokenizer, tokenizer_identity
from charfast.table import TokenCharTable


@dataclass
class TrainConfig:
    # data and tokenizer
    data: str | None = field(
        default=None, metadata={"help": "text file or folder (default: the embedded Shakespeare plays)"}
    )
    tokenizer: str = field(
        default="bpe:512",
        metadata={
            "help": "'bpe:VOCAB[:MAXLEN]' (BPE trained on the corpus, cached) or a tiktoken name such as cl100k_base"
        },
    )
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of documents held out for validation"})
    # model
    arch: str = field(default="char", metadata={"help": f"one of {', '.join(ARCHS)}"})
    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads (must divide n_embd)"})
    n_embd: int = field(default=128, metadata={"help": "model width"})
    block_size: int = field(default=128, metadata={"help": "context length in tokens (size of the position table)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})
    bias: bool = field(default=True, metadata={"help": "biases in Linear and LayerNorm"})
    tie_weights: bool = field(default=True, metadata={"help": "share the token embedding with the output layer"})
    char_dim: int = field(default=128, metadata={"help": "char embedding width (arch char)"})
    char_hidden: int = field(default=128, metadata={"help": "char-LSTM hidden size (arch char)"})
    char_backend: str = field(default="auto", metadata={"help": "char-LSTM backend: auto, reference, cpp, triton"})
    attention: str = field(default="auto", metadata={"help": f"one of {', '.join(ATTENTION_IMPLS)}"})
    # optimisation
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=2e-4, metadata={"help": "learning rate at the end of the cosine decay"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps"})
    lr_decay_steps: int | None = field(default=None, metadata={"help": "cosine decay length (default: max_steps)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (matrices and embeddings only)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: off)"})
    seed: int = field(default=1337, metadata={"help": "seed of initialisation, data order and dropout"})
    # run control (may change on --resume)
    max_steps: int = field(default=1200, metadata={"help": "optimizer steps to train in all"})
    eval_interval: int = field(default=200, metadata={"help": "evaluate and checkpoint every N steps"})
    eval_iters: int = field(default=10, metadata={"help": "validation batches per evaluation"})
    out_dir: str = field(default="out", metadata={"help": "where metrics.jsonl, ckpt.pt, loss.png, sample.txt go"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    compile: str = field(default="auto", metadata={"help": "torch.compile: auto (on for CUDA), on, off"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT_DIR/ckpt.pt"})
    sample_tokens: int = field(default=200, metadata={"help": "tokens to generate at the end (0: none)"})
    sample_prompt: str = field(default="", metadata={"help": "prompt of the sample (default: a document start)"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature"})
    top_k: int | None = field(default=40, metadata={"help": "sample from the k most likely tokens"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "tokenizer/token cache (default: CHARFAST_CACHE or ~/.cache/charfast)"}
    )


# Fields that steer a run but not what it computes: they may differ on --resume.
RUN_CONTROL = {
    "max_steps",
    "eval_interval",
    "eval_iters",
    "out_dir",
    "device",
    "compile",
    "resume",
    "sample_tokens",
    "sample_prompt",
    "temperature",
    "top_k",
    "progress",
    "cache_dir",
}
MODEL_FIELDS = {f.name for f in fields(GPTConfig)} - {"vocab_size"}

PRESETS = {
    # The default: 1.06M parameters, 4k tokens per step, 1200 steps (~2 epochs of the
    # plays); about 5 minutes on an otherwise idle 2-core CPU.
    "cpu": {},
    # GPT-2 small's shape (163M parameters with cl100k's 100k-token vocabulary, 124M with
    # GPT-2's 50k); 16 x 1024 x 4 = 65k tokens per step per GPU.
    "gpt2-small": dict(
        tokenizer="cl100k_base",
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        char_dim=128,
        char_hidden=256,
        batch_size=16,
        grad_accum=4,
        lr=6e-4,
        min_lr=6e-5,
        warmup_steps=700,
        max_steps=20000,
        eval_interval=500,
        eval_iters=50,
        beta2=0.95,
    ),
}


# ------------------------------------------------------------------ configuration
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charfast.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # SUPPRESS: only flags the user typed appear in the namespace, so we know what was asked for.
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="JSON file of settings (field names as below, with _ or -); flags override it",
    )
    parser.add_argument(
        "--preset",
        default=argparse.SUPPRESS,
        choices=sorted(PRESETS),
        help="named settings applied before --config and flags (default: cpu)",
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (default: {f.default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(
                flag, type=_parse_type(f.type), default=argparse.SUPPRESS, help=text, metavar=f.name.upper()
            )
    return parser


def _parse_type(annotation: str):
    if annotation.startswith("int"):
        return int if "None" not in annotation else _int_or_none
    return {"float": float}.get(annotation, str)


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def resolve_config(argv: list[str] | None = None) -> tuple[TrainConfig, set[str]]:
    """(config, names the user set): defaults < --preset < --config FILE < flags."""
    args = vars(build_parser().parse_args(argv))
    values = dataclasses.asdict(TrainConfig())
    values.update(PRESETS[args.pop("preset", "cpu")])
    asked = set()
    if "config" in args:
        from_file = _read_config_file(args.pop("config"))
        values.update(from_file)
        asked |= set(from_file)
    values.update(args)
    asked |= set(args)
    return validate_config(TrainConfig(**values)), asked


def _read_config_file(path: str) -> dict:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--config: cannot read {path}: {err}") from err
    if not isinstance(raw, dict):
        raise SystemExit(f"--config: {path} must hold a JSON object of settings")
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise SystemExit(f"--config: unknown setting(s) {unknown} in {path}; see --help")
    return values


def validate_config(config: TrainConfig) -> TrainConfig:
    positive = ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_iters")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.compile not in ("auto", "on", "off"):
        raise ValueError(f"--compile must be auto, on or off, got {config.compile!r}")
    if config.lr <= 0 or config.min_lr < 0 or config.min_lr > config.lr:
        raise ValueError(f"--lr must be > 0 and --min-lr in [0, lr], got lr {config.lr}, min_lr {config.min_lr}")
    if config.warmup_steps < 0 or config.grad_clip < 0 or config.sample_tokens < 0:
        raise ValueError("--warmup-steps, --grad-clip and --sample-tokens must be >= 0")
    if config.lr_decay_steps is None:
        config.lr_decay_steps = config.max_steps
    model_config(config, vocab_size=1)  # the model's own checks, before any data work
    return config


def model_config(config: TrainConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, **{k: getattr(config, k) for k in MODEL_FIELDS})


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at lr_decay_steps, then flat."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.lr_decay_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ distributed
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device_name}: CUDA is not available on this machine")
    if world_size == 1:
        return Distributed(), torch.device(device_name)
    ddp = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda", ddp.local_rank) if device_name.startswith("cuda") else torch.device("cpu")
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


class StopRequest:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step
    and save; a second one acts at once. (On Ctrl-C torchrun signals its workers too.)"""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ the run
class Trainer:
    def __init__(self, config: TrainConfig, asked: set[str]):
        self.config = config
        self.ddp, self.device = init_distributed(config.device)
        self.out_dir = Path(config.out_dir)
        self.ckpt_path = self.out_dir / "ckpt.pt"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if not config.resume and self.ckpt_path.exists():  # never overwrite a finished run's checkpoint
            raise ValueError(
                f"{self.ckpt_path} exists from an earlier run: pass --resume to continue it, "
                f"or choose another --out-dir"
            )
        resumed = self._load_resume_state(asked) if config.resume else None
        if resumed is not None:  # the checkpoint's settings win, except what steers the run
            for key, value in resumed["config"].items():
                if key not in RUN_CONTROL:
                    setattr(config, key, value)
        torch.manual_seed(config.seed)
        with main_rank_first(self.ddp):
            self._prepare_data()
        gpt_config = model_config(config, self.encoding.n_vocab)
        table = (
            TokenCharTable.from_tiktoken(self.encoding, cache_dir=config.cache_dir)
            if config.arch != "baseline"
            else None
        )
        self.model = GPT(gpt_config, char_table=table).to(self.device)
        if self.model.char_emb is not None:
            # The weights change between evals, and an eval batch needs only a few distinct
            # tokens: rebuilding the whole-vocabulary cache each time would cost more.
            self.model.char_emb.inference_cache = False
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_multiplier(s, config))
        self.step = 0
        torch.manual_seed(config.seed + self.ddp.rank)  # dropout differs per rank
        if resumed is not None:
            self._restore(resumed)
        self.train_model = self._wrap_model()
        self.records: list[dict] = []

    # ---------------------------------------------------------------- setup
    def _load_resume_state(self, asked: set[str]) -> dict:
        state = load_checkpoint(self.ckpt_path)
        conflicts = [
            f"--{k.replace('_', '-')} {getattr(self.config, k)!r} (checkpoint: {state['config'].get(k)!r})"
            for k in sorted(asked - RUN_CONTROL)
            if state["config"].get(k) != getattr(self.config, k)
        ]
        if conflicts:
            raise CheckpointError(
                f"--resume continues {self.ckpt_path} with its own settings; these flags "
                f"disagree with it: {', '.join(conflicts)}"
            )
        return state

    def _prepare_data(self) -> None:
        c = self.config
        train_docs, val_docs = split_documents(load_documents(c.data), c.val_fraction, seed=c.seed)
        show = c.progress and self.ddp.is_main
        self.encoding = get_tokenizer(c.tokenizer, [text for _, text in train_docs], cache_dir=c.cache_dir)
        self.tokenizer_id = tokenizer_identity(self.encoding)
        train_tokens = tokenize(self.encoding, train_docs, "train", cache_dir=c.cache_dir, show_progress=show)
        val_tokens = tokenize(self.encoding, val_docs, "val", cache_dir=c.cache_dir, show_progress=show)
        shard = dict(rank=self.ddp.rank, world_size=self.ddp.world_size)
        self.train_batches = TokenBatches(train_tokens, c.block_size, c.batch_size, seed=c.seed, **shard)
        self.val_batches = TokenBatches(val_tokens, c.block_size, c.batch_size, seed=c.seed + 1, **shard)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # Decay matrices and embeddings; never biases or LayerNorm gains.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            groups,
            lr=self.config.lr,
            betas=(self.config.beta1, self.config.beta2),
            fused=self.device.type in ("cuda", "cpu"),
        )

    def _wrap_model(self) -> torch.nn.Module:
        model = self.model
        if self.config.compile == "on" or (self.config.compile == "auto" and self.device.type == "cuda"):
            model = torch.compile(model)
        if self.ddp.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_state(self) -> dict | None:
        rngs = [None] * self.ddp.world_size
        if self.ddp.enabled:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if not self.ddp.is_main:
            return None
        return {
            "step": self.step,
            "config": dataclasses.asdict(self.config),
            "tokenizer": self.tokenizer_id,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.train_batches.state_dict(),
            "rng": rngs,
        }

    def save(self) -> None:
        state = self._checkpoint_state()
        if state is not None:
            save_checkpoint(self.ckpt_path, state)

    def _restore(self, state: dict) -> None:
        computed = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in RUN_CONTROL}
        check_compatible(state, computed, self.tokenizer_id, self.ckpt_path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.ckpt_path}: its weights do not fit this model: {err}") from err
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_batches.load_state_dict(state["data"])
        self.step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) != self.ddp.world_size and self.ddp.is_main:
            print(
                f"note: checkpoint was written by {len(rngs)} process(es), this run has "
                f"{self.ddp.world_size}; dropout randomness will differ from an uninterrupted run"
            )
        set_rng_state(rngs[self.ddp.rank % len(rngs)])

    # ---------------------------------------------------------------- steps
    def train_step(self) -> float:
        """One optimizer step over grad_accum micro-batches; the loss averaged over ranks."""
        model, c = self.train_model, self.config
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(c.grad_accum):
            x, y = self.train_batches.next(self.device)
            last = micro == c.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.ddp.enabled else model.no_sync()
            with sync:
                with self._autocast():
                    _, loss = model(x, y)
                (loss / c.grad_accum).backward()
            loss_sum += loss.detach()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(all_reduce_mean(loss_sum / c.grad_accum, self.ddp))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the same eval_iters held-out batches at every evaluation."""
        self.model.eval()
        losses = torch.zeros(self.config.eval_iters, device=self.device)
        for i in range(self.config.eval_iters):
            x, y = self.val_batches.batch(i, self.device)
            with self._autocast():
                losses[i] = self.model(x, y)[1]
        return float(all_reduce_mean(losses.mean(), self.ddp))

    def _stop_everywhere(self, stop: StopRequest) -> bool:
        flag = torch.tensor(float(stop.requested), device=self.device)
        if self.ddp.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag)

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        c = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._start_metrics()
        tokens_per_step = c.batch_size * c.block_size * c.grad_accum * self.ddp.world_size
        peak = _peak_flops(self.device)
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
        interrupted = False
        with StopRequest() as stop:
            while self.step < c.max_steps:
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                train_loss = self.train_step()
                elapsed = time.perf_counter() - started
                record = {
                    "step": self.step,
                    "train_loss": train_loss,
                    "lr": lr,
                    "tokens_per_s": tokens_per_step / elapsed,
                    "ms_per_step": 1000 * elapsed,
                }
                if peak:
                    record["mfu"] = self.model.flops_per_token() * record["tokens_per_s"] / (peak * self.ddp.world_size)
                if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                    record["val_loss"] = self.evaluate()
                self._log(record)
                bar.update(1)
                bar.set_postfix_str(_postfix(record))
                if self._stop_everywhere(stop) and self.step < c.max_steps:
                    interrupted = True
                    break
                if "val_loss" in record and self.step < c.max_steps:
                    self.save()
        bar.close()
        self.save()
        if interrupted:
            if self.ddp.is_main:
                print(f"interrupted: saved step {self.step} to {self.ckpt_path}; continue with --resume")
            return
        self._finish()

    def _start_metrics(self) -> None:
        """Fresh file for a new run; on resume, keep only the lines up to the checkpoint's step."""
        if not self.ddp.is_main:
            return
        kept = []
        if self.config.resume and self.metrics_path.exists():
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= self.step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.records = [json.loads(line) for line in kept]

    def _log(self, record: dict) -> None:
        if self.ddp.is_main:
            self.records.append(record)
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _finish(self) -> None:
        if not self.ddp.is_main:
            return
        plot_path = self.out_dir / "loss.png"
        plot_loss_curve(self.records, plot_path, title=f"{self.config.arch} · {self.encoding.name}")
        written = [self.metrics_path, self.ckpt_path, plot_path]
        if self.config.sample_tokens:
            sample = self.sample()
            sample_path = self.out_dir / "sample.txt"
            sample_path.write_text(sample, encoding="utf-8")
            written.append(sample_path)
            print("---- sample ----\n" + sample + "\n----------------")
        first, last = self.records[0], self.records[-1]
        print(
            f"train_loss {first['train_loss']:.3f} (step {first['step']}) -> {last['train_loss']:.3f} "
            f"(step {last['step']})" + (f", val_loss {last['val_loss']:.3f}" if "val_loss" in last else "")
        )
        print("wrote " + ", ".join(str(p) for p in written))

    def sample(self) -> str:
        c, enc = self.config, self.encoding
        prompt = enc.encode_ordinary(c.sample_prompt) if c.sample_prompt else []
        eot = enc.encode_single_token(END_OF_TEXT) if END_OF_TEXT in enc.special_tokens_set else None
        if not prompt:
            prompt = [eot if eot is not None else 0]  # a document start
        idx = torch.tensor([prompt], device=self.device)
        self.model.eval()
        if self.model.char_emb is not None:  # the weights are final now: one vocabulary pass, then lookups
            self.model.char_emb.inference_cache = True
        with self._autocast():
            out = self.model.generate(idx, c.sample_tokens, temperature=c.temperature, top_k=c.top_k)
        tokens = [t for t in out[0].tolist() if t != eot]
        return enc.decode(tokens, errors="replace")


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    peaks = gpu_peaks(torch.cuda.get_device_name(device))
    return None if peaks is None else peaks[0]


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
    try:
        config, asked = resolve_config(argv)
        trainer = Trainer(config, asked)
        trainer.run()
    except (ValueError, CheckpointError) as err:
        print(f"charfast.train: error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

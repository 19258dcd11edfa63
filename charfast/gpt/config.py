"""The settings of a training run and the one place that decides them.

Precedence, lowest first: TrainConfig's defaults < --preset < --config FILE < flags < the
checkpoint. On --resume the checkpoint decides every setting that changes what is
computed (all but RUN_CONTROL), and a flag or config-file value that disagrees with it is
an error; a fresh run refuses an --out-dir that already holds a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from charfast.backends import backend_names, why_unavailable
from charfast.gpt import archs
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.distributed import resolve_device
from charfast.gpt.memory_need import check_training_memory
from charfast.gpt.model import ATTENTION_IMPLS, GPT, GPTConfig, flash_attn_unavailable_reason
from charfast.gpt.tokenizer import check_tokenizer_name, vocabulary_bound
from charfast.gpt.tracking import parse_trackers
from charfast.table import TokenCharTable

CHECKPOINT_NAME = "ckpt.pt"
MAX_SAMPLE_TOKENS = 1_000_000  # the sample at the end of a run is a look at the model, not a corpus


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; each field is also a flag (--field-name)."""

    # data and tokenizer
    data: str | None = field(
        default=None,
        metadata={
            "help": "a text file, or a folder of text (.txt .md .text), jsonl and parquet files, streamed; or a "
            "folder of nanoGPT token files (train.bin, val.bin) with the --tokenizer that made them "
            "(default: the embedded Shakespeare plays)"
        },
    )
    text_field: str = field(
        default="text", metadata={"help": "the field (jsonl) or column (parquet) that holds each document's text"}
    )
    data_workers: int = field(
        default=0, metadata={"help": "threads that tokenize a corpus not yet in the cache (0: one per core)"}
    )
    tokenizer: str = field(
        default="bpe:512",
        metadata={
            "help": "'bpe:VOCAB[:MAXLEN]' (BPE trained on the corpus, cached) or a tiktoken name such as cl100k_base"
        },
    )
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of documents held out for validation"})
    # model
    arch: str = field(default="char", metadata={"help": f"one of {', '.join(archs.names())}"})
    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads (must divide n_embd)"})
    n_embd: int = field(default=128, metadata={"help": "model width"})
    block_size: int = field(default=128, metadata={"help": "context length in tokens (size of the position table)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})
    bias: bool = field(default=True, metadata={"help": "biases in Linear and LayerNorm"})
    tie_weights: bool = field(default=True, metadata={"help": "share the token embedding with the output layer"})
    char_dim: int = field(
        default=128, metadata={"help": "char embedding width (archs with a char encoder; the CNN's too)"}
    )
    char_hidden: int = field(
        default=128,
        metadata={"help": "char-LSTM hidden size (archs char, char-shuffled; the other encoders match its parameters)"},
    )
    char_backend: str = field(default="auto", metadata={"help": "char-LSTM backend: auto, reference, cpp, triton"})
    attention: str = field(default="auto", metadata={"help": f"one of {', '.join(ATTENTION_IMPLS)}"})
    parallel: str = field(
        default="ddp",
        metadata={
            "help": "how torchrun's processes hold the model: ddp (a replica each) or fsdp (FSDP2: sharded; "
            "the char encoder stays whole)"
        },
    )
    # optimisation
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=2e-4, metadata={"help": "learning rate at the end of the cosine decay"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps"})
    lr_decay_steps: int | None = field(
        default=None,
        metadata={"help": "steps of the cosine decay (default: the current --max-steps, also on --resume)"},
    )
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
    log: str = field(
        default="",
        metadata={
            "help": "experiment trackers beside metrics.jsonl: tensorboard (OUT_DIR/tb), wandb (OUT_DIR/wandb, "
            "offline unless W&B's settings say online), or both: repeat the flag or separate by commas; "
            "under torchrun spell it --log-to (default: none)"
        },
    )
    wandb_project: str = field(default="charfast", metadata={"help": "the W&B project (with --log wandb)"})
    wandb_run_name: str | None = field(
        default=None, metadata={"help": "the W&B run's name (with --log wandb; default: W&B's)"}
    )


# Fields that steer a run but not what it computes: they may differ on --resume. (The
# schedule's length follows max_steps, so a resumed run may extend both.)
RUN_CONTROL = {
    "max_steps",
    "lr_decay_steps",
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
    "log",
    "wandb_project",
    "wandb_run_name",
    "data_workers",
    # What it reads is known by content: the corpus digest (checked on resume) covers it.
    "text_field",
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


@dataclass(frozen=True)
class ResolvedConfig:
    """What resolve_config decided: the run's settings and, on --resume, its checkpoint."""

    config: TrainConfig
    checkpoint: dict | None  # the loaded checkpoint to continue (--resume), else None

    @property
    def checkpoint_path(self) -> Path:
        return checkpoint_path(self.config)


def checkpoint_path(config: TrainConfig) -> Path:
    return Path(config.out_dir) / CHECKPOINT_NAME


def resolve_config(argv: list[str] | None = None) -> ResolvedConfig:
    """The run's settings from the command line `argv`, by the precedence above, checked;
    on --resume with its checkpoint loaded."""
    return resolve_settings(*settings_from_flags(argv))


def resolve_settings(config: TrainConfig, asked: set[str]) -> ResolvedConfig:
    """`config` checked and, on resume, completed from its checkpoint (loaded), with which
    the settings named in `asked` (those the user gave) must agree."""
    path = checkpoint_path(config)
    if not config.resume:
        if path.exists():  # never overwrite a finished run's checkpoint
            raise ValueError(
                f"{path} exists from an earlier run: pass --resume to continue it, or choose another --out-dir"
            )
        return ResolvedConfig(validate_config(config), checkpoint=None)
    state = load_checkpoint(path)
    check_checkpoint_settings(state["config"], path)
    saved = {k: v for k, v in state["config"].items() if k not in RUN_CONTROL}
    compared = asked - RUN_CONTROL
    if "corpus_sha256" in state and "data" in asked:
        # The checkpoint knows its corpus by content (checked when the run reads it): the
        # same text may be named by another path, e.g. where another node mounts it.
        saved.pop("data", None)
        compared.discard("data")
    conflicts = [
        f"--{k.replace('_', '-')} {getattr(config, k)!r} (checkpoint: {saved.get(k)!r})"
        for k in sorted(compared)
        if saved.get(k) != getattr(config, k)
    ]
    if conflicts:
        raise CheckpointError(
            f"--resume continues {path} with its own settings; these flags disagree with it: {', '.join(conflicts)}"
        )
    return ResolvedConfig(validate_config(dataclasses.replace(config, **saved)), checkpoint=state)


def settings_from_flags(argv: list[str] | None) -> tuple[TrainConfig, set[str]]:
    """(the settings `argv` gives by the precedence above, before any checkpoint is read; the
    names of the settings the user gave, by flag or --config file)."""
    args = vars(build_parser().parse_args(argv))
    values = dataclasses.asdict(TrainConfig())
    values.update(PRESETS[args.pop("preset", "cpu")])
    asked = set()  # the settings the user gave: on --resume they must agree with the checkpoint
    if "config" in args:
        from_file = _read_config_file(args.pop("config"))
        values.update(from_file)
        asked |= set(from_file)
    values.update(args)
    asked |= set(args)
    return TrainConfig(**values), asked


def computed_settings(config: TrainConfig) -> dict:
    """The settings that decide what a run computes (all but RUN_CONTROL)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_CONTROL}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charfast.train",
        description="Train a GPT (char-aware or baseline) and write metrics, a checkpoint, a loss plot and a sample.",
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
        help_text = f.metadata["help"]
        text = help_text if "(default" in help_text else f"{help_text} (default: {f.default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif f.name == "log":
            # --log-to too: torchrun's own parser refuses --log, as an abbreviation of its --log-dir.
            parser.add_argument(
                flag, "--log-to", action=CommaJoined, default=argparse.SUPPRESS, help=text, metavar="TRACKER"
            )
        else:
            parser.add_argument(
                flag, type=_parse_type(f.type), default=argparse.SUPPRESS, help=text, metavar=f.name.upper()
            )
    return parser


class CommaJoined(argparse.Action):
    """A flag that may be repeated: its values joined by commas (--log a --log b == --log a,b)."""

    def __call__(self, parser, namespace, value, option_string=None):
        earlier = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, value if not earlier else f"{earlier},{value}")


def _parse_type(annotation: str):
    if annotation.startswith("int"):
        return int if "None" not in annotation else _int_or_none
    return {"float": float}.get(annotation, str)


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _read_config_file(path: str) -> dict:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config: cannot read {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"--config: {path} must hold a JSON object of settings")
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"--config: unknown setting(s) {unknown} in {path}; see --help")
    check_types(values, f"--config {path}")
    return values


# A field's annotation -> the JSON values it takes (bool is not an int here, though Python says so).
_JSON_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def check_checkpoint_settings(settings: dict, path: str | Path) -> None:
    """A CheckpointError when a checkpoint's settings hold a name this version does not know
    or a value of the wrong type."""
    unknown = sorted(set(settings) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise CheckpointError(f"{path} holds settings this version of charfast does not know: {unknown}")
    try:
        check_types(settings, str(path))
    except ValueError as err:
        raise CheckpointError(str(err)) from err


def check_types(values: dict, source: str) -> None:
    """A ValueError naming the setting when a value does not have its field's type (JSON
    from --config or a checkpoint: "false" is not false, null is not a number)."""
    annotations = {f.name: f.type for f in fields(TrainConfig)}
    for name, value in values.items():
        kinds = [kind.strip() for kind in annotations[name].split("|")]
        if value is None and "None" in kinds:
            continue
        if any(
            isinstance(value, _JSON_TYPES[k]) and not (k != "bool" and isinstance(value, bool))
            for k in kinds
            if k != "None"
        ):
            continue
        wanted = " or ".join(
            {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "None": "null"}[k]
            for k in kinds
        )
        raise ValueError(f"{source}: {name} must be {wanted}, got {json.dumps(value)}")


def validate_config(config: TrainConfig) -> TrainConfig:
    """`config` if every setting is in range; else a ValueError naming the flag. Checked
    before any data is read or model built, including the device and the char backend."""
    c = config

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_iters"):
        if getattr(c, name) < 1:
            raise ValueError(f"{flag(name)} must be >= 1, got {getattr(c, name)}")
    for name in ("warmup_steps", "sample_tokens", "data_workers"):
        if getattr(c, name) < 0:
            raise ValueError(f"{flag(name)} must be >= 0, got {getattr(c, name)}")
    if c.sample_tokens > MAX_SAMPLE_TOKENS:
        raise ValueError(f"--sample-tokens must be at most {MAX_SAMPLE_TOKENS:,}, got {c.sample_tokens}")
    if not 0 <= c.seed < 2**62:
        raise ValueError(f"--seed must lie in [0, 2**62), got {c.seed}")
    if c.lr_decay_steps is not None and c.lr_decay_steps < 1:
        raise ValueError(f"--lr-decay-steps must be >= 1 (or none: --max-steps), got {c.lr_decay_steps}")
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "temperature", "beta1", "beta2", "val_fraction"):
        if not math.isfinite(getattr(c, name)):
            raise ValueError(f"{flag(name)} must be a finite number, got {getattr(c, name)}")
    if c.lr <= 0 or c.min_lr < 0 or c.min_lr > c.lr:
        raise ValueError(f"--lr must be > 0 and --min-lr in [0, lr], got lr {c.lr}, min_lr {c.min_lr}")
    for name in ("weight_decay", "grad_clip", "temperature"):
        if getattr(c, name) < 0:
            raise ValueError(f"{flag(name)} must be >= 0, got {getattr(c, name)}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(c, name) < 1:
            raise ValueError(f"{flag(name)} must lie in [0, 1), got {getattr(c, name)}")
    if not 0 < c.val_fraction < 1:
        raise ValueError(f"--val-fraction must lie in (0, 1), got {c.val_fraction}")
    if c.top_k is not None and c.top_k < 1:
        raise ValueError(f"--top-k must be >= 1 (or none), got {c.top_k}")
    if c.parallel not in ("ddp", "fsdp"):
        raise ValueError(f"--parallel must be ddp or fsdp, got {c.parallel!r}")
    if c.parallel == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ValueError("--parallel fsdp shards the model over torchrun's processes: run it under torchrun")
    if c.compile not in ("auto", "on", "off"):
        raise ValueError(f"--compile must be auto, on or off, got {c.compile!r}")
    if c.data is not None and not Path(c.data).exists():
        raise ValueError(f"--data: {c.data} does not exist")
    if not c.out_dir.strip():
        raise ValueError(f"--out-dir must name a folder, got {c.out_dir!r}")
    try:
        c.sample_prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"--sample-prompt: character {err.start} is not valid text") from err
    check_tokenizer_name(c.tokenizer)
    parse_trackers(c.log)
    try:
        model_config(c, vocab_size=1)  # the model's own checks, reported by flag
    except ValueError as err:
        raise ValueError(re.sub(r"^GPTConfig: (\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(err))) from err
    device = resolve_device(c.device)
    encoder = archs.get(c.arch).encoder
    if encoder == "lstm":
        _check_char_backend(c.char_backend, device)
    elif encoder is not None and c.char_backend != "auto":
        raise ValueError(
            f"--char-backend {c.char_backend} is the char-LSTM's; --arch {c.arch} has none (its encoder: {encoder})"
        )
    reason = flash_attn_unavailable_reason(device) if c.attention == "flash-attn" else None
    if reason is not None:
        raise ValueError(f"--attention flash-attn cannot run here: {reason}; use --attention auto or sdpa")
    check_training_memory(c, vocabulary_bound(c.tokenizer), device, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    return config


def _check_char_backend(name: str, device) -> None:
    known = ["auto", *backend_names()]
    if name not in known:
        raise ValueError(f"--char-backend must be one of {', '.join(known)}, got {name!r}")
    if name != "auto":
        reason = why_unavailable(name, device)
        if reason is not None:
            raise ValueError(f"--char-backend {name} cannot run on {device}: {reason}")


def model_config(config: TrainConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, **{k: getattr(config, k) for k in MODEL_FIELDS})


def build_model(config: TrainConfig, encoding) -> GPT:
    """The GPT of a run's settings for the tiktoken Encoding `encoding`, freshly initialised
    on the CPU (the char arch reads the encoding's TokenCharTable from the disk cache)."""
    arch = archs.get(config.arch)
    reads_table = arch.encoder is not None or arch.matched
    table = TokenCharTable.from_tiktoken(encoding, cache_dir=config.cache_dir) if reads_table else None
    return GPT(model_config(config, encoding.n_vocab), char_table=table)

"""`python -m charfast.export --ckpt out/ckpt.pt --out-dir FOLDER`: a charfast.train run as a
plain Hugging Face GPT-2 folder, served wherever GPT-2 is (transformers, vLLM, TGI,
llama.cpp's converter) without charfast.

At inference a token's char embedding depends on its id alone, so the model's input table
is wte + the char (or matched) embedding of every id, computed once in float64 and cast:
the folded table is the exported wte. Where the output layer was tied to wte it keeps the
original (tie_word_embeddings false), so the logits are the trained model's. The folder is
built beside the target and renamed into place; the same run gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from charfast.atomic import this_host
from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.config import computed_settings
from charfast.gpt.failures import run_cli
from charfast.gpt.model import GPT
from charfast.gpt.run import LoadedRun, load_run

RECORD_NAME = "charfast_export.json"  # which run a folder was exported from (an export of it is replaced)
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the GPT's layer norms use


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charfast.export",
        description="Export a charfast.train run as a plain Hugging Face GPT-2 folder (safetensors, config, "
        "tokenizer), its char embedding folded into the token table: no charfast needed to serve it.",
    )
    parser.add_argument("--ckpt", default="out/ckpt.pt", help="the run's checkpoint (default: %(default)s)")
    parser.add_argument(
        "--out-dir", required=True, help="the folder to write (an earlier export of this run is replaced)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def export() -> int:
        folder = export_run(Path(args.ckpt), Path(args.out_dir))
        print(f"charfast.export: wrote {folder}")
        return 0

    return run_cli("charfast.export", export)


def export_run(ckpt: Path, out_dir: Path) -> Path:
    """Write the run whose checkpoint is `ckpt` into `out_dir` as a Hugging Face GPT-2 folder."""
    state = load_checkpoint(ckpt)
    run = load_run(ckpt.parent, ckpt=ckpt, device="cpu", state=state)
    record = {
        "format": 1,
        "run": {"settings": computed_settings(run.config), "tokenizer": state["tokenizer"]}
        | {"corpus_sha256": state.get("corpus_sha256")},
        "step": run.step,
    }
    _check_target(out_dir, record)
    from charfast.gpt.hf_tokenizer import hf_tokenizer  # imports transformers

    tokenizer = hf_tokenizer(run.encoding)
    temp = out_dir.with_name(f".{out_dir.name}.tmp-export-{this_host()}-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir(parents=True)
        _write_model(run, temp)
        tokenizer.save_pretrained(str(temp))  # tokenizer.json and its config
        (temp / "README.md").write_text(_model_card(run, ckpt), encoding="utf-8")
        _write_json(temp / RECORD_NAME, record)
        _publish(temp, out_dir)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out_dir


def gpt2_config(model: GPT, eot: int | None, tied: bool) -> dict:
    """The transformers GPT2Config (as config.json holds it) that computes what `model` does."""
    c = model.config
    return {
        "activation_function": "gelu",  # exact erf GELU, as F.gelu computes it
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": c.dropout,
        "bos_token_id": eot,
        "embd_pdrop": c.dropout,
        "eos_token_id": eot,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "model_type": "gpt2",
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_head": c.n_head,
        "n_inner": 4 * c.n_embd,
        "n_layer": c.n_layer,
        "n_positions": c.block_size,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": c.dropout,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": c.vocab_size,
    }


def gpt2_state_dict(model: GPT) -> tuple[dict[str, torch.Tensor], bool]:
    """(GPT2LMHeadModel's tensors for `model`, float32 and contiguous; whether the output
    layer stays tied to wte). A bias the model has none of is written as zeros; GPT-2's
    Conv1D weights are the transposes of the Linear ones."""
    folded = model.char_emb is not None or model.matched_emb is not None
    tied = model.config.tie_weights and not folded
    tensors = {"transformer.wte.weight": model.token_table(exact=True), "transformer.wpe.weight": model.wpe.weight}
    for i, block in enumerate(model.blocks):
        prefix = f"transformer.h.{i}."
        tensors |= _layer_norm(prefix + "ln_1", block.ln_1) | _layer_norm(prefix + "ln_2", block.ln_2)
        for name, linear in (
            ("attn.c_attn", block.attn.c_attn),
            ("attn.c_proj", block.attn.c_proj),
            ("mlp.c_fc", block.mlp.c_fc),
            ("mlp.c_proj", block.mlp.c_proj),
        ):
            tensors[f"{prefix}{name}.weight"] = linear.weight.t()  # Conv1D: [in, out]
            tensors[f"{prefix}{name}.bias"] = _bias(linear.bias, linear.out_features)
    tensors |= _layer_norm("transformer.ln_f", model.ln_f)
    if not tied:
        tensors["lm_head.weight"] = model.lm_head.weight  # the trained wte where it was tied
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, tied


def _layer_norm(prefix: str, norm: torch.nn.LayerNorm) -> dict[str, torch.Tensor]:
    if norm.eps != LAYER_NORM_EPS:
        raise ValueError(f"{prefix}: eps {norm.eps}, but the export writes layer_norm_epsilon {LAYER_NORM_EPS}")
    return {f"{prefix}.weight": norm.weight, f"{prefix}.bias": _bias(norm.bias, norm.normalized_shape[0])}


def _bias(bias: torch.Tensor | None, size: int) -> torch.Tensor:
    return bias if bias is not None else torch.zeros(size)


def _write_model(run: LoadedRun, folder: Path) -> None:
    from safetensors.torch import save_file

    tensors, tied = gpt2_state_dict(run.model)
    eot = end_of_text_id(run.encoding)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    _write_json(folder / "config.json", gpt2_config(run.model, eot, tied))
    _write_json(folder / "generation_config.json", {"bos_token_id": eot, "eos_token_id": eot})


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _model_card(run: LoadedRun, ckpt: Path) -> str:
    c = run.config
    if run.model.char_emb is not None or run.model.matched_emb is not None:
        fold = (
            "its char (or matched) embedding, a function of the token id alone, evaluated for every id in float64 "
            "and added to the token embedding: this folder's wte; the output layer keeps the trained token embedding"
        )
    else:
        fold = "nothing: the arch has no char or matched embedding"
    return (
        f"# {c.arch} GPT (charfast), exported as GPT-2\n\n"
        f"Trained with `python -m charfast.train`: arch `{c.arch}`, {c.n_layer} layers, width {c.n_embd}, "
        f"{c.n_head} heads, context {c.block_size}, tokenizer `{c.tokenizer}` ({run.encoding.name}, "
        f"{run.encoding.n_vocab} ids), step {run.step} of checkpoint `{ckpt.name}`.\n\n"
        f"Folded: {fold}.\n\n"
        "A plain transformers GPT-2 (`AutoModelForCausalLM`, `AutoTokenizer`); no charfast needed. "
        f"`{RECORD_NAME}` records the run's settings.\n"
    )


def _check_target(out_dir: Path, record: dict) -> None:
    """A ValueError unless `out_dir` is missing, empty, or an earlier export of the same run."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    try:
        earlier = json.loads((out_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict) or earlier.get("run") != json.loads(json.dumps(record["run"])):
        raise ValueError(
            f"--out-dir {out_dir} holds something other than an earlier export of this run; "
            "choose an empty or new folder"
        )


def _publish(temp: Path, out_dir: Path) -> None:
    """Rename the finished `temp` to `out_dir`, replacing what was there (checked before)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-export-{this_host()}-{os.getpid()}")
        out_dir.rename(old)
    temp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)

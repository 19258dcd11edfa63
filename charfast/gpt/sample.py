"""Text from a trained GPT: `python -m charfast.sample --ckpt out/ckpt.pt --prompt "..."`.

The counterpart of nanoGPT's sample.py. The checkpoint is read with weights_only=True; the
model and tokenizer are rebuilt from the settings it holds (a corpus BPE from the corpus
it was trained on, checked against the checkpoint's tokenizer hash). Tokens are printed
as they are generated.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint
from charfast.gpt.config import TrainConfig, build_model, check_checkpoint_settings
from charfast.gpt.data import load_documents, split_documents
from charfast.gpt.distributed import resolve_device
from charfast.gpt.failures import run_cli
from charfast.gpt.model import GPT
from charfast.gpt.tokenizer import get_tokenizer, tokenizer_identity


def load_model(ckpt_path: str | Path, device: torch.device) -> tuple[GPT, object]:
    """(model in eval mode on `device`, tiktoken Encoding) of a training checkpoint."""
    state = load_checkpoint(ckpt_path)
    check_checkpoint_settings(state["config"], ckpt_path)
    config = TrainConfig(**state["config"])
    texts = []
    if config.tokenizer.startswith("bpe:"):  # retrained from its corpus, or read from the cache
        try:
            train_docs, _ = split_documents(load_documents(config.data), config.val_fraction, seed=config.seed)
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{ckpt_path}: its tokenizer {config.tokenizer!r} is rebuilt from the training corpus "
                f"{config.data or '(the embedded default)'}, which cannot be read: {err}"
            ) from err
        texts = [text for _, text in train_docs]
    encoding = get_tokenizer(config.tokenizer, texts, cache_dir=config.cache_dir)
    if tokenizer_identity(encoding) != state["tokenizer"]:
        raise CheckpointError(
            f"{ckpt_path}: the tokenizer rebuilt from its settings ({encoding.name}) is not the one it was "
            f"trained with ({state['tokenizer'].get('name')}); has its corpus changed?"
        )
    # Every backend and attention computes the same function: take the best for this device,
    # whatever the run was trained with (a GPU's triton checkpoint samples on a CPU too).
    model = build_model(dataclasses.replace(config, char_backend="auto", attention="auto"), encoding)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{ckpt_path}: its weights do not fit its own settings: {err}") from err
    return model.to(device).eval(), encoding


def prompt_ids(encoding, prompt: str) -> list[int]:
    """The prompt's tokens (a document start when empty); a ValueError when the tokenizer
    cannot encode it exactly (tiktoken would silently replace what UTF-8 cannot hold)."""
    if not prompt:
        eot = end_of_text_id(encoding)
        return [eot if eot is not None else 0]
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"--prompt: character {err.start} ({prompt[err.start]!r}) is not valid text "
            "(an undecodable byte in the command line?); the tokenizer cannot encode it"
        ) from err
    ids = encoding.encode_ordinary(prompt)
    if encoding.decode(ids) != prompt:
        raise ValueError("--prompt: the tokenizer cannot encode this text exactly")
    return ids


def decoded_pieces(encoding, tokens: Iterator[int]) -> Iterator[str]:
    """Text of each new token as soon as it completes a character (a token may end inside a
    multi-byte UTF-8 character); <|endoftext|> is left out."""
    eot = end_of_text_id(encoding)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        if token != eot:
            yield decoder.decode(encoding.decode_single_token_bytes(token))
    yield decoder.decode(b"", final=True)


def stream_sample(
    model: GPT, encoding, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None
) -> Iterator[str]:
    """The text of the new tokens after `prompt`, piece by piece as they are generated."""
    device = next(model.parameters()).device
    idx = torch.tensor([prompt_ids(encoding, prompt)], device=device)
    model.eval()

    def token_ids() -> Iterator[int]:
        for token in model.generate_stream(idx, max_new_tokens, temperature=temperature, top_k=top_k):
            yield int(token)

    return decoded_pieces(encoding, token_ids())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charfast.sample", description="Sample text from a charfast.train checkpoint."
    )
    parser.add_argument("--ckpt", default="out/ckpt.pt", help="the checkpoint (default: %(default)s)")
    parser.add_argument("--prompt", default="", help="text to continue (default: a document start)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples to draw (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens per sample (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the sampling (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """Every flag, before the checkpoint is read."""
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if not 0 <= args.temperature < float("inf"):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must lie in [0, 2**63), got {args.seed}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def sample() -> int:
        _check_arguments(args)
        device = resolve_device(args.device)
        model, encoding = load_model(args.ckpt, device)
        torch.manual_seed(args.seed)
        for i in range(args.num_samples):
            pieces = stream_sample(model, encoding, args.prompt, args.max_new_tokens, args.temperature, args.top_k)
            sys.stdout.write(args.prompt)  # after stream_sample has checked it
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n" + ("-" * 40 + "\n" if i < args.num_samples - 1 else ""))
        return 0

    return run_cli("charfast.sample", sample)

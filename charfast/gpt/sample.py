"""Text from a trained GPT: `python -m charfast.sample --ckpt out/ckpt.pt --prompt "..."`.

The counterpart of nanoGPT's sample.py. The run is read back by charfast.gpt.run.load_run
(model and tokenizer rebuilt from the settings its checkpoint holds). Tokens are printed
as they are generated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from charfast.gpt.distributed import resolve_device
from charfast.gpt.failures import run_cli
from charfast.gpt.run import load_run
from charfast.gpt.sampling import stream_sample


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
        run = load_run(Path(args.ckpt).parent, ckpt=args.ckpt, device=device)
        model, encoding = run.model, run.encoding
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

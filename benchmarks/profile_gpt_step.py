"""Where a compiled GPT-2-small training step's time goes on a GPU, with and without the
char embedding: torch.profiler over the step of benchmarks/test_bench_gpt_step_gpu.py.

    python benchmarks/profile_gpt_step.py [--variants baseline-compiled char-triton-compiled] [--steps 3]

Variants as in test_bench_gpt_step_gpu.py (e.g. baseline-cudagraphs for reduce-overhead).
For each variant: wall and GPU-busy time per step (wall minus busy is the GPU waiting for
the host), kernels and host syncs per step, and the kernels that took the most GPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's shared inputs
from conftest import (  # noqa: E402
    GPT2_SMALL,
    build_gpt,
    compile_mode_of,
    gpt2_small_inputs,
    gpt_train_step,
    load_cl100k_table,
    load_shakespeare_tokens,
)
from profile_gpu import print_profile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["baseline-compiled", "char-triton-compiled"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20, help="ops listed per profile")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_gpt_step.py: no CUDA GPU here")
    table = load_cl100k_table()
    config, idx, targets = gpt2_small_inputs(table, load_shakespeare_tokens(), args.batch)
    for variant in args.variants:
        model = build_gpt(variant, table, config).cuda()
        step = gpt_train_step(model, idx, targets, compile_mode_of(variant))
        for _ in range(3):  # compile and warm up outside the profile
            step()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            wall = (time.perf_counter() - start) / args.steps
        title = f"{variant}, {GPT2_SMALL.n_layer}x{GPT2_SMALL.n_embd}, B={args.batch} T={GPT2_SMALL.block_size}"
        print_profile(title, prof, wall, args.steps, args.rows, on_gpu=True)
        del model, step
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

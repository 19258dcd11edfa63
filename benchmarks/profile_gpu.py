"""Where the char embedding's time goes: torch.profiler over CharEmbedding forward +
backward, charfast's backend (Triton on a GPU) next to torch.nn.LSTM (cuDNN on a GPU) over
the distinct tokens padded and packed, on the same batch of real cl100k text.

    python benchmarks/profile_gpu.py [--batch 16 64] [--hidden 128 768] [--steps 10] [--device cpu]

For each (hidden, implementation) it prints the wall time per step, the device's busy time
per step (the sum of its kernels; wall minus busy is host overhead while the GPU idles),
the kernels and memcpy/sync calls per step, and the ops that took the most device time.
On a CPU (float32, the cpp backend) it profiles the host side only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's shared inputs
from conftest import batch_ids, batch_work, load_cl100k_table, load_shakespeare_tokens  # noqa: E402

from charfast import CharEmbedding  # noqa: E402
from charfast.baselines.packed_lstm import packed_distinct_lstm_char_embedding, padded_lstm_char_embedding  # noqa: E402

IMPLEMENTATIONS = {
    "charfast": lambda module, idx: module(idx),
    "nn.LSTM padded": padded_lstm_char_embedding,
    "nn.LSTM packed": packed_distinct_lstm_char_embedding,
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_one(table, idx, hidden: int, impl: str, steps: int, rows: int) -> None:
    device = idx.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    module = CharEmbedding(table, 128, char_dim=hidden, hidden=hidden, inference_cache=False).to(device, dtype)
    grad = torch.randn(*idx.shape, 128, device=device, dtype=dtype)
    run = IMPLEMENTATIONS[impl]

    def step():
        module.zero_grad(set_to_none=True)
        run(module, idx).backward(grad)

    for _ in range(3):  # compile and warm up outside the profile
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        wall = (time.perf_counter() - start) / steps
    name = f"{impl} ({module.resolved_backend(device).name})" if impl == "charfast" else impl
    print_profile(f"hidden={hidden} {name}", prof, wall, steps, rows, on_gpu=device.type == "cuda")


def print_profile(title: str, prof, wall: float, steps: int, rows: int, on_gpu: bool) -> None:
    """Wall and (on a GPU) device-busy time per step, kernels and host syncs per step, and
    the `rows` ops that took the most device (else host) time."""
    events = prof.key_averages()
    device_time = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))  # noqa: E731
    # Kernels and copies only: an op's own row repeats the device time of its kernels.
    on_device = [e for e in events if device_time(e) > 0 and e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(device_time(e) for e in on_device) / steps
    kernels = sum(e.count for e in on_device)
    syncs = (
        sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync"))
        / steps
    )
    busy = (
        f", GPU busy {busy_us / 1e3:.3f} ms/step ({kernels / steps:.0f} kernels, "
        f"{syncs:.0f} memcpy/sync calls per step)"
        if on_gpu
        else ""
    )
    print(f"\n=== {title}: wall {wall * 1e3:.3f} ms/step{busy}")
    sort_key = (
        "self_cpu_time_total"
        if not on_gpu
        else "self_device_time_total"
        if hasattr(events[0], "self_device_time_total")
        else "self_cuda_time_total"
    )
    print(events.table(sort_by=sort_key, row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 768])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=15, help="ops listed per profile")
    parser.add_argument("--device", default="cuda", help="cuda (bf16, Triton vs cuDNN) or cpu (float32, cpp)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("profile_gpu.py: no CUDA GPU here (--device cpu profiles the CPU path)")
    table = load_cl100k_table()
    tokens = load_shakespeare_tokens()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    for batch in args.batch:
        idx = batch_ids(tokens, batch, args.seq_len).to(device)  # [B, T]
        work = batch_work(table, idx)  # its longest token is the length of the LSTM's serial chain
        print(
            f"\n##### {where}, B={batch} T={args.seq_len}, forward+backward: {work['distinct']} distinct tokens, "
            f"{work['distinct_chars']} chars, longest token {work['longest']} chars, {work['trie_nodes']} trie nodes"
        )
        for hidden in args.hidden:
            for impl in IMPLEMENTATIONS:
                profile_one(table, idx, hidden, impl, args.steps, args.rows)


if __name__ == "__main__":
    main()

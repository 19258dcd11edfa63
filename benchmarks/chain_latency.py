"""The serial chain of the char-LSTM: the time of one dependent step of the Triton kernels.

    python benchmarks/chain_latency.py [--hidden 128 256 768] [--kernels tiled resident split-stepped ...]

A step of the LSTM needs the previous step's h, so a batch can never take less than
(its longest token) x (one step's latency), however many rows run beside it. This
measures that latency with the kernels themselves on one program (16 rows, the fewest a
tl.dot takes; a row costs what 16 do): each kernel alone, timed by CUDA events, on rows
of `long` chars and of 1 char; the difference over (long - 1) steps is the time per
dependent step, launch and set-up cancelled. The GPU benchmark's floor takes
(longest token) x (forward step [+ backward step]) as its chain term.

--kernels picks the kernels, forward and backward alike: the tiled ones (each program
loops over all of W_hh), the resident ones (each program keeps W_hh on chip: hidden <=
128) and the split ones (kernels/split_lstm_forward.py and
split_lstm_backward.py: W_hh over many programs, a launch or a grid barrier per step). A
stepped split kernel launches once per char of the table's width whatever the rows hold,
so its difference measures the steps' work only; the forward's wall time per step (all
launches included) is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from charfast.kernels.char_lstm_backward import launch_char_lstm_backward
from charfast.kernels.char_lstm_forward import launch_char_lstm_forward
from charfast.kernels.resident_lstm import launch_resident_lstm_backward, launch_resident_lstm_forward, resident_fits
from charfast.kernels.split_grid import SPLIT_MODES
from charfast.kernels.split_lstm_backward import launch_split_lstm_backward
from charfast.kernels.split_lstm_forward import launch_split_lstm_forward

KERNELS = ("tiled", "resident", *SPLIT_MODES)

ROWS = 16
CHARS = 64


def _kernel_seconds(run, rounds: int) -> float:
    """Median seconds of run() on the GPU (CUDA events), after warm-up calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _launchers(kernel: str, width: int):
    """(forward, backward) launchers of `kernel` for a table `width` chars wide."""
    if kernel == "tiled":
        return launch_char_lstm_forward, launch_char_lstm_backward
    if kernel == "resident":
        return launch_resident_lstm_forward, launch_resident_lstm_backward
    return (
        lambda *inputs: launch_split_lstm_forward(*inputs, mode=kernel),
        lambda *inputs: launch_split_lstm_backward(*inputs, width, mode=kernel),
    )


def _kernels_seconds(
    hidden: int, length: int, width: int, dtype: torch.dtype, rounds: int, kernel: str = "tiled"
) -> tuple[float, float]:
    """(forward, backward) kernel seconds for ROWS rows of `length` chars each."""
    g = torch.Generator(device="cuda").manual_seed(0)
    cuda = dict(device="cuda")
    gate_table = (0.1 * torch.randn(CHARS, 4 * hidden, generator=g, **cuda)).to(dtype)  # [C, 4H]
    weight_hh = (hidden**-0.5 * torch.randn(4 * hidden, hidden, generator=g, **cuda)).to(dtype)  # [4H, H]
    table_chars = torch.randint(0, CHARS, (ROWS, width), generator=g, **cuda).to(torch.uint8)  # [U, W]
    ids = torch.arange(ROWS, **cuda)  # [U]
    lengths = torch.full((ROWS,), length, dtype=torch.int64, **cuda)  # [U] all equal: any order is sorted
    offsets = torch.arange(ROWS, **cuda) * length  # [U]
    inputs = (gate_table, weight_hh, table_chars, ids, lengths, offsets, ids)
    launch, launch_backward = _launchers(kernel, width)
    forward = _kernel_seconds(lambda: launch(*inputs, ROWS * length), rounds)
    _, _, c_prev, _ = launch(*inputs, ROWS * length)
    gates = torch.randn(ROWS * length, 4 * hidden, generator=g, **cuda)  # [S, 4H] any values: timing only
    grad_h = torch.randn(ROWS, hidden, generator=g, **cuda).to(dtype)
    backward = _kernel_seconds(
        lambda: launch_backward(gates.clone(), c_prev, weight_hh, grad_h, lengths, offsets, ids), rounds
    )
    clone = _kernel_seconds(lambda: gates.clone(), rounds)  # taken out: the backward runs in place
    return forward, backward - clone


def chain_step_seconds(
    hidden: int, dtype: torch.dtype = torch.bfloat16, long: int = 33, rounds: int = 30, kernel: str = "tiled"
) -> dict:
    """{"forward": s, "backward": s, "forward_wall": s}: one dependent step of each Triton
    kernel at H = hidden (`kernel` both ways), and the forward's time / its steps."""
    short_times = _kernels_seconds(hidden, 1, long, dtype, rounds, kernel)
    long_times = _kernels_seconds(hidden, long, long, dtype, rounds, kernel)
    steps = {
        name: max(0.0, (slow - fast) / (long - 1))
        for name, fast, slow in zip(("forward", "backward"), short_times, long_times)
    }
    return {**steps, "forward_wall": long_times[0] / long}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 768])
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("chain_latency.py: needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}: one dependent step of the Triton kernels, {ROWS} rows, bf16")
    for hidden in args.hidden:
        for kernel in args.kernels:
            if kernel == "resident" and not resident_fits(hidden, torch.bfloat16):
                print(f"hidden {hidden} resident: W_hh does not fit on chip, not run")
                continue
            step = chain_step_seconds(hidden, kernel=kernel)
            print(
                f"hidden {hidden} {kernel}: forward {step['forward'] * 1e6:.2f} us/step "
                f"(wall {step['forward_wall'] * 1e6:.2f}), backward {step['backward'] * 1e6:.2f} us/step"
            )


if __name__ == "__main__":
    main()

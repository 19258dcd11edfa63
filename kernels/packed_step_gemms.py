"""The char-LSTM backward's parallel work over the packed steps, bounded on the device.

Dimensions as in char_lstm_forward.py: S packed steps in use, S_max >= S the capacity the
buffers were sized by (known to the host), C chars, H hidden.

The steps in use, S, are counted by the forward on the device. Reading S back to size
these GEMMs would make the host wait for the GPU and keep the backward out of CUDA
graphs, so each kernel reads S from `step_count` [1] itself and touches only rows s < S.
Grids are sized by what the host knows (S_max, the device's multiprocessors): programs
loop over the tiles that exist, so no launch depends on S.

  recompute_gates_kernel   gates [S, 4H] = gate_table[chars] + h_prev @ W_hh^T (float32),
                           the pre-activations, as the forward kernel summed them
  gate_table_grad_kernel   grad_gate_table [C, 4H] += each step's dgates row at its char
                           (atomic adds, as torch's index_add does on a GPU)
  weight_hh_grad_kernel    partial [P, 4H, H]: split p sums dgates^T @ h_prev over every
                           P-th block of steps; the P partials are summed afterwards, in a
                           fixed order, so the result does not depend on scheduling
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import dot_precision, multiprocessors

# Tiles: 64 steps x 64 columns, reductions 64 wide (32 for float32 operands, whose exact
# dot needs twice the shared memory). Every choice compiles for sm_90 well inside its
# shared memory (tests/core/test_triton.py).
_BLOCK_STEPS = 64
_BLOCK_COLS = 64
_PROGRAMS_PER_MULTIPROCESSOR = 4


def _reduction_tile(reduced: int, dtype: torch.dtype) -> int:
    """Width of a tl.dot reduction tile over `reduced` elements of `dtype` operands."""
    widest = 32 if dtype == torch.float32 else 64
    return min(widest, max(16, triton.next_power_of_2(reduced)))


# The compile-time constants of each kernel, for its launch and for compiling it ahead of time.
def recompute_gates_constants(hidden: int, dtype: torch.dtype) -> dict:
    return dict(
        BLOCK_S=_BLOCK_STEPS,
        BLOCK_N=_BLOCK_COLS,
        BLOCK_K=_reduction_tile(hidden, dtype),
        DOT_PRECISION=dot_precision(dtype),
    )


def gate_table_grad_constants() -> dict:
    return dict(BLOCK_S=_BLOCK_STEPS, BLOCK_N=_BLOCK_COLS)


def weight_hh_grad_constants(capacity: int, dtype: torch.dtype) -> dict:
    # The steps are this GEMM's reduction: as wide as a reduction tile can be.
    return dict(
        BLOCK_M=_BLOCK_COLS,
        BLOCK_N=_BLOCK_COLS,
        BLOCK_S=_reduction_tile(capacity, dtype),
        DOT_PRECISION=dot_precision(dtype),
    )


def _persistent_programs(tiles_at_most: int, device: torch.device) -> int:
    """Programs for a grid that loops over at most `tiles_at_most` tiles."""
    return max(1, min(tiles_at_most, _PROGRAMS_PER_MULTIPROCESSOR * multiprocessors(device)))


def _gate_tile_grid(capacity: int, gate_units: int, device: torch.device, programs: int | None):
    """The grid of a kernel that loops over the [S, 4H] tiles of _gate_tile_count: `programs`
    or as many as fill the device, never more than the capacity's tiles; None: no tile."""
    tiles_at_most = triton.cdiv(capacity, _BLOCK_STEPS) * triton.cdiv(gate_units, _BLOCK_COLS)
    return (programs or _persistent_programs(tiles_at_most, device),) if tiles_at_most else None


@triton.jit
def _gate_tile_count(total_steps, H, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tiles of BLOCK_S steps x BLOCK_N gate units that cover the [S, 4H] rows in use."""
    return tl.cdiv(total_steps, BLOCK_S) * tl.cdiv(4 * H, BLOCK_N)


@triton.jit
def _gate_tile(tile, step_chars, total_steps, H, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr):
    """(steps [BS] int64, step_ok [BS], cols [BN], col_ok [BN], chars [BS] int64) of that
    tile: its steps and which are in use, its gate units and which exist, each step's char."""
    col_tiles = tl.cdiv(4 * H, BLOCK_N)
    steps = (tile // col_tiles) * BLOCK_S + tl.arange(0, BLOCK_S)
    cols = (tile % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    step_ok = steps < total_steps
    steps = steps.to(tl.int64)  # S_max * 4H may pass 2^31
    chars = tl.load(step_chars + steps, mask=step_ok, other=0).to(tl.int64)
    return steps, step_ok, cols, cols < 4 * H, chars


@triton.jit
def recompute_gates_kernel(
    gate_table,  # [C, 4H] parameter dtype
    weight_hh,  # [4H, H] parameter dtype
    h_prev,  # [S_max, H] parameter dtype: h_{t-1} of every step
    step_chars,  # [S_max] int32: the char of every step
    step_count,  # [1] int64: S
    gates,  # [S_max, 4H] float32 out: rows s < S written
    H,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    total_steps = tl.load(step_count).to(tl.int32)
    for tile in range(tl.program_id(0), _gate_tile_count(total_steps, H, BLOCK_S, BLOCK_N), tl.num_programs(0)):
        steps, step_ok, cols, col_ok, chars = _gate_tile(tile, step_chars, total_steps, H, BLOCK_S, BLOCK_N)
        tile_ok = step_ok[:, None] & col_ok[None, :]  # [BS, BN]
        acc = tl.load(gate_table + chars[:, None] * (4 * H) + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)  # [BK]
            k_ok = ks < H
            h_tile = tl.load(
                h_prev + steps[:, None] * H + ks[None, :], mask=step_ok[:, None] & k_ok[None, :], other=0.0
            )  # [BS, BK]
            # W_hh^T tile [BK, BN]: element (k, n) = W_hh[n, k]
            w_ok = k_ok[:, None] & col_ok[None, :]
            w_tile = tl.load(weight_hh + cols[None, :] * H + ks[:, None], mask=w_ok, other=0.0)
            acc = tl.dot(h_tile, w_tile, acc, input_precision=DOT_PRECISION)
        tl.store(gates + steps[:, None] * (4 * H) + cols[None, :], acc, mask=tile_ok)


@triton.jit
def gate_table_grad_kernel(
    dgates,  # [S_max, 4H] float32: rows s < S hold each step's gate gradients
    step_chars,  # [S_max] int32
    step_count,  # [1] int64: S
    grad_gate_table,  # [C, 4H] float32, zeroed: receives the sums
    H,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    total_steps = tl.load(step_count).to(tl.int32)
    for tile in range(tl.program_id(0), _gate_tile_count(total_steps, H, BLOCK_S, BLOCK_N), tl.num_programs(0)):
        steps, step_ok, cols, col_ok, chars = _gate_tile(tile, step_chars, total_steps, H, BLOCK_S, BLOCK_N)
        tile_ok = step_ok[:, None] & col_ok[None, :]  # [BS, BN]
        rows = tl.load(dgates + steps[:, None] * (4 * H) + cols[None, :], mask=tile_ok, other=0.0)  # [BS, BN]
        tl.atomic_add(grad_gate_table + chars[:, None] * (4 * H) + cols[None, :], rows, mask=tile_ok, sem="relaxed")


@triton.jit
def weight_hh_grad_kernel(
    dgates,  # [S_max, 4H] float32
    h_prev,  # [S_max, H] parameter dtype
    step_count,  # [1] int64: S
    partial,  # [P, 4H, H] float32 out: split p's sum over its blocks of steps
    H,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    total_steps = tl.load(step_count).to(tl.int32)
    col_tiles = tl.cdiv(H, BLOCK_N)
    split, splits = tl.program_id(1), tl.num_programs(1)
    rows = (tl.program_id(0) // col_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] over the 4H gate units
    cols = (tl.program_id(0) % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] over H
    row_ok = rows < 4 * H
    col_ok = cols < H
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s0 in range(split * BLOCK_S, total_steps, splits * BLOCK_S):
        steps = s0 + tl.arange(0, BLOCK_S)  # [BS]
        step_ok = steps < total_steps
        steps = steps.to(tl.int64)
        dgates_t = tl.load(
            dgates + steps[None, :] * (4 * H) + rows[:, None], mask=row_ok[:, None] & step_ok[None, :], other=0.0
        )  # [BM, BS]: dgates^T
        h_tile = tl.load(
            h_prev + steps[:, None] * H + cols[None, :], mask=step_ok[:, None] & col_ok[None, :], other=0.0
        )  # [BS, BN]
        acc = tl.dot(dgates_t.to(h_prev.dtype.element_ty), h_tile, acc, input_precision=DOT_PRECISION)
    out = partial + split.to(tl.int64) * (4 * H * H) + rows[:, None] * H + cols[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & col_ok[None, :])


def launch_recompute_gates(gate_table, weight_hh, h_prev, step_chars, step_count, programs: int | None = None):
    """gates [S_max, 4H] float32: rows s < S hold each step's pre-activations, the rest are
    left unwritten. `programs` overrides the persistent grid (tests force several tiles each)."""
    capacity, hidden = h_prev.shape
    gates = torch.empty(capacity, 4 * hidden, dtype=torch.float32, device=h_prev.device)
    grid = _gate_tile_grid(capacity, 4 * hidden, h_prev.device, programs)
    if grid:
        recompute_gates_kernel[grid](
            gate_table,
            weight_hh,
            h_prev,
            step_chars,
            step_count,
            gates,
            hidden,
            **recompute_gates_constants(hidden, weight_hh.dtype),
        )
    return gates


def launch_gate_table_grad(dgates, step_chars, step_count, n_chars: int, programs: int | None = None):
    """[C, 4H] float32: the sum of the dgates rows s < S of each char."""
    capacity, gate_units = dgates.shape
    grad = torch.zeros(n_chars, gate_units, dtype=torch.float32, device=dgates.device)
    grid = _gate_tile_grid(capacity, gate_units, dgates.device, programs)
    if grid:
        gate_table_grad_kernel[grid](
            dgates, step_chars, step_count, grad, gate_units // 4, **gate_table_grad_constants()
        )
    return grad


def launch_weight_hh_grad(dgates, h_prev, step_count, splits: int | None = None):
    """[4H, H] float32: dgates[:S]^T @ h_prev[:S]. `splits` (P) overrides how many programs
    share each output tile's sum over the steps (tests force several)."""
    capacity, hidden = h_prev.shape
    constants = weight_hh_grad_constants(capacity, h_prev.dtype)
    output_tiles = triton.cdiv(4 * hidden, constants["BLOCK_M"]) * triton.cdiv(hidden, constants["BLOCK_N"])
    if splits is None:  # enough programs to fill the device, never more than there are step blocks
        splits = _persistent_programs(triton.cdiv(capacity, constants["BLOCK_S"]), h_prev.device) // output_tiles
    partial = torch.empty(max(1, splits), 4 * hidden, hidden, dtype=torch.float32, device=h_prev.device)
    weight_hh_grad_kernel[(output_tiles, partial.shape[0])](
        dgates,
        h_prev,
        step_count,
        partial,
        hidden,
        **constants,
    )
    return partial.sum(0)

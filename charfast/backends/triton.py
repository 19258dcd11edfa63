"""The Triton backend: the fused char-LSTM as torch.library ops (forward + backward kernels).

Dimensions: U distinct tokens, S = sum of their lengths, C chars, H hidden.

Layout. The distinct tokens are sorted by length, longest first, so each program's block
of rows has near-equal lengths and loops only to its own longest row. Their steps are
packed (row r's step t at slot offsets[r] + t), so the kernels run S steps, not
U x (longest token). Prefix sharing over a trie (as the cpp backend does) is not built
here: it only pays if it beats this layout on a GPU, which is still to be measured.

Saved for the backward: the forward kernel already passes its state between steps
through the packed h_prev [S, H] / c_prev [S, H] slots, so keeping them costs no extra
traffic; the backward recomputes the pre-activations from h_prev as one parallel GEMM
(no time dependency) instead of saving [S, 4H] gates (4x the memory of h_prev).

No host read, forward or backward, so both can be captured in a CUDA graph. The caller
passes the distinct ids padded to a size the host knows (charfast.distinct: PAD_ID rows
run no step), and the packed buffers are sized by the most chars that many tokens of the
table can have (TokenCharTable.most_chars). S stays on the device: every kernel reads it
there and uses only the S rows in use (kernels/packed_step_gemms.py for the backward's
GEMMs). Ids outside the table cannot be refused without a read: they run no step and
their rows of h are NaN (CharEmbedding's check_ids refuses them in eager mode).

The op is opaque to torch.compile (custom ops `charfast::triton_char_lstm_forward` /
`..._backward` with fake and autograd registrations): a model using it compiles with
fullgraph=True, with static shapes.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
from torch import Tensor

from charfast.backends import Backend
from charfast.distinct import PAD_ID

try:  # kernels/ becomes charfast.kernels through an install (pyproject.toml maps it)
    from charfast.kernels.char_lstm_backward import launch_char_lstm_backward
    from charfast.kernels.char_lstm_forward import char_lstm_forward_kernel, launch_char_lstm_forward
    from charfast.kernels.interpreter_probe import dot_probe_kernel
    from charfast.kernels.packed_step_gemms import (
        launch_gate_table_grad,
        launch_recompute_gates,
        launch_weight_hh_grad,
    )
    from charfast.kernels.resident_lstm import launch_resident_lstm_backward, launch_resident_lstm_forward
    from charfast.kernels.split_grid import SPLIT_MODES
    from charfast.kernels.split_lstm_backward import launch_split_lstm_backward
    from charfast.kernels.split_lstm_forward import launch_split_lstm_forward
except ModuleNotFoundError as err:
    if err.name != "charfast.kernels":
        raise
    raise ImportError(
        "charfast.kernels is missing: the Triton kernels in kernels/ are importable only from an installed "
        "charfast (pip install --no-build-isolation -e . in a source checkout)"
    ) from err

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Which kernels run: "tiled" (each program owns rows and streams all of W_hh every step; the
# default until a GPU measures otherwise), "resident" (each program owns rows and keeps
# W_hh on chip: small hidden sizes, kernels/resident_lstm.py) or a split one (W_hh over
# many programs, kernels/split_lstm_forward.py and split_lstm_backward.py), chosen apart
# for the forward (CHARFAST_TRITON_FORWARD) and the backward (CHARFAST_TRITON_BACKWARD).
KERNEL_CHOICES = ("tiled", "resident", *SPLIT_MODES)


def chosen_kernel(variable: str) -> str:
    """The kernel named by environment `variable`, else "tiled"; a ValueError names one it
    does not know."""
    name = os.environ.get(variable, "tiled")
    if name not in KERNEL_CHOICES:
        raise ValueError(f"{variable} must be one of {', '.join(KERNEL_CHOICES)}, got {name!r}")
    return name


# Triton picks interpreter or compiler when a kernel is defined (TRITON_INTERPRET=1 at import).
KERNELS_INTERPRETED = not isinstance(char_lstm_forward_kernel, triton.runtime.JITFunction)


@functools.cache
def interpreter_bfloat16_dot_works() -> bool:
    """Whether Triton's interpreter gets a bfloat16 tl.dot right: a 16 x 16 product of
    small integers (exact in bfloat16 and float32) against torch's. Run once, on the CPU."""
    a = (torch.arange(256).view(16, 16) % 5 - 2).to(torch.bfloat16)  # [16, 16] values in -2..2
    b = a.t().contiguous()
    out = torch.empty(16, 16)
    dot_probe_kernel[(1,)](a, b, out, N=16)
    return torch.equal(out, a.float() @ b.float())


class ForwardOutputs(NamedTuple):
    """What the forward op returns: h, then the state the backward needs. S_max: the
    step capacity the caller passed; S <= S_max of its rows are in use."""

    h: Tensor  # [U, H] parameter dtype: the state after each token's last char
    h_prev: Tensor  # [S_max, H] parameter dtype: h before each packed step
    c_prev: Tensor  # [S_max, H] float32: c before each packed step
    step_chars: Tensor  # [S_max] int32: the char of each packed step
    sorted_lengths: Tensor  # [U] int64: the tokens' lengths, longest first
    offsets: Tensor  # [U] int64: the packed slot of each sorted row's first step
    order: Tensor  # [U] int64: sorted row -> output row
    step_count: Tensor  # [1] int64: S


class SavedForBackward(NamedTuple):
    """What autograd keeps between the ops: the backward op's arguments after grad_h."""

    gate_table: Tensor  # [C, 4H]
    weight_hh: Tensor  # [4H, H]
    h_prev: Tensor
    c_prev: Tensor
    step_chars: Tensor
    sorted_lengths: Tensor
    offsets: Tensor
    order: Tensor
    step_count: Tensor


@torch.library.custom_op("charfast::triton_char_lstm_forward", mutates_args=())
def char_lstm_forward_op(
    gate_table: Tensor, weight_hh: Tensor, table_chars: Tensor, table_lengths: Tensor, ids: Tensor, step_capacity: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The fields of ForwardOutputs, in order (a custom op returns a plain tuple).
    step_capacity: at least the total length of the tokens in ids."""
    # Checked here, in the op that runs for real also under torch.compile (the probe runs a kernel).
    if KERNELS_INTERPRETED and gate_table.dtype == torch.bfloat16 and not interpreter_bfloat16_dot_works():
        raise TypeError(
            "charfast triton char_lstm: bfloat16 does not run under TRITON_INTERPRET=1 with this "
            "Triton (its interpreter multiplies the bit patterns of bfloat16 tl.dot operands, "
            "triton-lang/triton#11584); use float16 or float32 there, or a GPU"
        )
    vocab, width = table_chars.shape
    in_table = (ids >= 0) & (ids < vocab)  # [U]
    # Pads and ids outside the table run no step; the clamps keep every read of the table,
    # here and in the kernel, in bounds whatever the table holds.
    table_ids = ids.clamp(0, vocab - 1)  # [U]
    lengths = table_lengths[table_ids].long().clamp_(0, width).masked_fill_(~in_table, 0)  # [U]
    order = torch.argsort(lengths, descending=True, stable=True)  # [U] longest first
    sorted_lengths = lengths[order]  # [U]
    ends = torch.cumsum(sorted_lengths, 0)  # [U]
    offsets = ends - sorted_lengths  # [U] exclusive prefix sum
    # Rows past the step capacity (a table changed since the caller sized it) run no step:
    # the kernels never write outside their buffers. They are a suffix, so offsets hold.
    fits = ends <= step_capacity  # [U]
    sorted_lengths.masked_fill_(~fits, 0)
    step_count = sorted_lengths.sum(0, keepdim=True)  # [1] read by the kernels, never by the host
    args = (gate_table, weight_hh, table_chars, table_ids[order], sorted_lengths, offsets, order, step_capacity)
    kernel = chosen_kernel("CHARFAST_TRITON_FORWARD")
    if kernel == "tiled":
        h, h_prev, c_prev, step_chars = launch_char_lstm_forward(*args)
    elif kernel == "resident":
        h, h_prev, c_prev, step_chars = launch_resident_lstm_forward(*args)
    else:  # the interpreter runs programs one after another: a persistent grid must be one program there
        h, h_prev, c_prev, step_chars = launch_split_lstm_forward(
            *args, mode=kernel, programs=1 if KERNELS_INTERPRETED else None
        )
    # No silent answer for an id the table lacks, nor for a row that did not fit.
    overflowed = torch.zeros_like(in_table).scatter_(0, order, ~fits)  # [U] in output order
    h.masked_fill_(((~in_table & (ids != PAD_ID)) | overflowed)[:, None], float("nan"))
    outputs = ForwardOutputs(h, h_prev, c_prev, step_chars, sorted_lengths, offsets, order, step_count)
    return tuple(outputs)


@char_lstm_forward_op.register_fake
def _(gate_table, weight_hh, table_chars, table_lengths, ids, step_capacity):
    n_rows, hidden = ids.shape[0], weight_hh.shape[1]
    index = ids.new_empty(n_rows, dtype=torch.int64)
    outputs = ForwardOutputs(
        h=weight_hh.new_empty(n_rows, hidden),
        h_prev=weight_hh.new_empty(step_capacity, hidden),
        c_prev=weight_hh.new_empty(step_capacity, hidden, dtype=torch.float32),
        step_chars=ids.new_empty(step_capacity, dtype=torch.int32),
        sorted_lengths=index,
        offsets=index.clone(),
        order=index.clone(),
        step_count=ids.new_empty(1, dtype=torch.int64),
    )
    return tuple(outputs)


@torch.library.custom_op("charfast::triton_char_lstm_backward", mutates_args=())
def char_lstm_backward_op(
    grad_h: Tensor,
    gate_table: Tensor,
    weight_hh: Tensor,
    h_prev: Tensor,
    c_prev: Tensor,
    step_chars: Tensor,
    sorted_lengths: Tensor,
    offsets: Tensor,
    order: Tensor,
    step_count: Tensor,
    max_length: int,
) -> tuple[Tensor, Tensor]:
    """(grad of gate_table [C, 4H], grad of weight_hh [4H, H]). max_length: the table's
    width, a bound on every row's length."""
    # Pre-activations of every step at once: [S_max, 4H] float32 (rows from S on unused),
    # overwritten in place by dgates.
    gates = launch_recompute_gates(gate_table, weight_hh, h_prev, step_chars, step_count)
    args = (gates, c_prev, weight_hh, grad_h.contiguous(), sorted_lengths, offsets, order)
    kernel = chosen_kernel("CHARFAST_TRITON_BACKWARD")
    if kernel == "tiled":
        launch_char_lstm_backward(*args)
    elif kernel == "resident":
        launch_resident_lstm_backward(*args)
    else:
        launch_split_lstm_backward(*args, max_length, mode=kernel, programs=1 if KERNELS_INTERPRETED else None)
    grad_gate_table = launch_gate_table_grad(gates, step_chars, step_count, gate_table.shape[0])  # [C, 4H]
    grad_weight_hh = launch_weight_hh_grad(gates, h_prev, step_count)  # [4H, H]
    return grad_gate_table.to(gate_table.dtype), grad_weight_hh.to(weight_hh.dtype)


@char_lstm_backward_op.register_fake
def _(
    grad_h,
    gate_table,
    weight_hh,
    h_prev,
    c_prev,
    step_chars,
    sorted_lengths,
    offsets,
    order,
    step_count,
    max_length,
):
    return torch.empty_like(gate_table), torch.empty_like(weight_hh)


def _setup_context(ctx, inputs, output):
    gate_table, weight_hh, *_ = inputs  # the table, the ids and the step capacity have no gradient
    out = ForwardOutputs(*output)
    ctx.mark_non_differentiable(out.h_prev, out.c_prev)
    saved = SavedForBackward(
        gate_table,
        weight_hh,
        out.h_prev,
        out.c_prev,
        out.step_chars,
        out.sorted_lengths,
        out.offsets,
        out.order,
        out.step_count,
    )
    ctx.save_for_backward(*saved)
    ctx.max_length = inputs[2].shape[1]  # table_chars [V, W]


def _backward(ctx, grad_h, *_unused_grads):
    saved = SavedForBackward(*ctx.saved_tensors)
    grad_gate_table, grad_weight_hh = char_lstm_backward_op(grad_h, *saved, ctx.max_length)
    return grad_gate_table, grad_weight_hh, None, None, None, None


char_lstm_forward_op.register_autograd(_backward, setup_context=_setup_context)


def check_inputs(gate_table: Tensor, weight_hh: Tensor, table, ids: Tensor) -> None:
    """Raise a clear error for anything the kernels cannot take (checked before launch)."""
    name = "charfast triton char_lstm"
    for arg, value in (("gate_table", gate_table), ("weight_hh", weight_hh), ("ids", ids)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(value).__name__}")
    if gate_table.dtype not in SUPPORTED_DTYPES or weight_hh.dtype != gate_table.dtype:
        raise TypeError(
            f"{name}: gate_table and weight_hh must share one dtype of "
            f"{[str(d) for d in SUPPORTED_DTYPES]}, got {gate_table.dtype} and {weight_hh.dtype}"
        )
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 4 * weight_hh.shape[1] or weight_hh.shape[1] < 1:
        raise ValueError(f"{name}: weight_hh must be [4H, H] with H >= 1, got {tuple(weight_hh.shape)}")
    if gate_table.dim() != 2 or gate_table.shape != (table.n_chars, weight_hh.shape[0]):
        raise ValueError(
            f"{name}: gate_table must be [n_chars, 4H] = [{table.n_chars}, {weight_hh.shape[0]}], "
            f"got {tuple(gate_table.shape)}"
        )
    if ids.dim() != 1 or ids.dtype != torch.int64:
        raise TypeError(f"{name}: ids must be a 1-D int64 tensor, got {ids.dim()}-D {ids.dtype}")
    if not (gate_table.device == weight_hh.device == ids.device):
        raise ValueError(
            f"{name}: gate_table ({gate_table.device}), weight_hh ({weight_hh.device}) and ids "
            f"({ids.device}) must be on one device"
        )


def char_lstm_triton(gate_table: Tensor, weight_hh: Tensor, table, ids: Tensor) -> Tensor:
    """h [U, H] after each token's last char (0 for zero-length tokens); see charfast.backends."""
    check_inputs(gate_table, weight_hh, table, ids)
    table_chars, table_lengths = table.on(ids.device)
    outputs = char_lstm_forward_op(
        gate_table.contiguous(), weight_hh.contiguous(), table_chars, table_lengths, ids, table.most_chars(ids.shape[0])
    )
    return ForwardOutputs(*outputs).h


def _unavailable_reason(device: torch.device) -> str | None:
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu":
        return (
            None
            if KERNELS_INTERPRETED
            else ("Triton runs on CPU only in its interpreter: set TRITON_INTERPRET=1 before triton is first imported")
        )
    return f"Triton kernels run on CUDA (or on CPU under TRITON_INTERPRET=1), not on {device.type}"


BACKEND = Backend(
    name="triton",
    char_lstm=char_lstm_triton,
    unavailable_reason=_unavailable_reason,
    prepare=lambda table, device: table.on(device),
    takes_padded_ids=True,
)  # the table's device copy

"""The GPT's loss: the mean cross-entropy over the targets that are not IGNORE_INDEX.

On a GPU it runs as two Triton kernels (kernels/cross_entropy.py) that never make a
float32 copy of the [N, V] logits: over a 100k vocabulary that copy and the float32
log_softmax kept for the backward are the largest memory traffic of a step. Elsewhere it
is torch's cross-entropy over the logits in float32, which defines the semantics; the
kernels are tested against it (under Triton's interpreter on a CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

IGNORE_INDEX = -100  # a target with this value is not scored (e.g. the question of a task example)

try:  # kernels/ becomes charfast.kernels through an install (pyproject.toml maps it)
    import triton

    from charfast.kernels.cross_entropy import cross_entropy_backward_kernel, cross_entropy_forward_kernel
except ImportError:  # no Triton (or a source tree without the install): torch's loss everywhere
    triton = None

VOCAB_TILE = 4096  # vocabulary entries per tile: 16 KB of float32 per program, many loads in flight


def mean_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """logits [..., V], targets [...] int64 -> the mean over targets != IGNORE_INDEX of
    -log softmax(logits)[target], float32 (NaN when every target is ignored, as torch's)."""
    if triton is None or not logits.is_cuda:
        return torch_mean_cross_entropy(logits, targets)
    targets = targets.reshape(-1)  # [N]
    losses = cross_entropy_rows(logits.reshape(-1, logits.shape[-1]), targets)  # [N]
    return losses.sum() / (targets != IGNORE_INDEX).sum()


def torch_mean_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """mean_cross_entropy as torch computes it, from a float32 copy of the logits: the
    semantics the kernels are held to, and what runs where they do not."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@torch.library.custom_op("charfast::cross_entropy_rows", mutates_args=())
def cross_entropy_rows_op(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(loss [N] float32, 0 at ignored targets; lse [N] float32, saved for the backward)."""
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(loss)
    if rows:
        cross_entropy_forward_kernel[(rows,)](
            logits, targets, loss, lse, vocab, logits.stride(0), IGNORE_INDEX, BLOCK_V=VOCAB_TILE
        )
    return loss, lse


@cross_entropy_rows_op.register_fake
def _(logits, targets):
    loss = logits.new_empty(logits.shape[0], dtype=torch.float32)
    return loss, torch.empty_like(loss)


@torch.library.custom_op("charfast::cross_entropy_rows_backward", mutates_args=())
def cross_entropy_rows_backward_op(logits: Tensor, targets: Tensor, lse: Tensor, grad_loss: Tensor) -> Tensor:
    """grad of logits [N, V] in their dtype, for the gradient grad_loss [N] of each row's loss."""
    rows, vocab = logits.shape
    grad_logits = torch.empty(rows, vocab, dtype=logits.dtype, device=logits.device)
    if rows:
        cross_entropy_backward_kernel[(rows, triton.cdiv(vocab, VOCAB_TILE))](
            logits,
            targets,
            lse,
            grad_loss.float().contiguous(),
            grad_logits,
            vocab,
            logits.stride(0),
            IGNORE_INDEX,
            BLOCK_V=VOCAB_TILE,
        )
    return grad_logits


@cross_entropy_rows_backward_op.register_fake
def _(logits, targets, lse, grad_loss):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output):
    logits, targets = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(logits, targets, lse)


def _backward(ctx, grad_loss, _grad_lse):
    logits, targets, lse = ctx.saved_tensors
    return cross_entropy_rows_backward_op(logits, targets, lse, grad_loss), None


cross_entropy_rows_op.register_autograd(_backward, setup_context=_setup_context)


def cross_entropy_rows(logits: Tensor, targets: Tensor) -> Tensor:
    """Each row's loss [N] float32 for logits [N, V] (any float dtype) and targets [N]:
    -log softmax(logits[n])[targets[n]], 0 where the target is IGNORE_INDEX, NaN where it
    lies outside [0, V) otherwise. Differentiable in logits."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy_rows: logits must be [N, V] and targets [N], got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if not logits.dtype.is_floating_point or targets.dtype != torch.int64:
        raise TypeError(
            f"cross_entropy_rows: logits must be floating point and targets int64, got {logits.dtype} and "
            f"{targets.dtype}"
        )
    if logits.device != targets.device:
        raise ValueError(
            f"cross_entropy_rows: logits ({logits.device}) and targets ({targets.device}) must share a device"
        )
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return cross_entropy_rows_op(logits, targets.contiguous())[0]

"""Cross-entropy over a large vocabulary in two passes over the logits, never in float32.

Dimensions: N rows (positions), V vocabulary.

torch's cross-entropy of 16-bit logits first makes a float32 copy of them, then a float32
log_softmax that it keeps for the backward: at N = 16,384 and V = 100,277 that is 6.6 GB
written and read several times. Here the forward reads each row once (an online softmax:
running max and sum of exponentials, float32) and keeps only its log-sum-exp [N]; the
backward reads the row again and writes the gradient in the logits' dtype:

    loss[n] = lse[n] - logits[n, target[n]]           (0 where target = ignore_index)
    grad[n, v] = (exp(logits[n, v] - lse[n]) - [v = target[n]]) * grad_loss[n]

A target outside [0, V) that is not ignore_index gives a NaN loss (its logit is not read).
"""

import triton
import triton.language as tl


@triton.jit
def cross_entropy_forward_kernel(
    logits,  # [N, V] any float dtype, rows `row_stride` apart
    targets,  # [N] int64
    loss,  # [N] float32 out
    lse,  # [N] float32 out: log-sum-exp of each row
    V,
    row_stride,
    ignore_index,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_logits = logits + row * row_stride
    running_max = tl.max(tl.full((BLOCK_V,), float("-inf"), tl.float32), axis=0)  # scalar
    running_sum = tl.sum(tl.zeros((BLOCK_V,), tl.float32), axis=0)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(row_logits + cols, mask=cols < V, other=float("-inf")).to(tl.float32)  # [BV]
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        running_max = new_max
    row_lse = running_max + tl.log(running_sum)
    target = tl.load(targets + row)
    in_range = (target >= 0) & (target < V)
    target_logit = tl.load(row_logits + tl.where(in_range, target, 0)).to(tl.float32)
    row_loss = tl.where(in_range, row_lse - target_logit, float("nan"))
    tl.store(loss + row, tl.where(target == ignore_index, 0.0, row_loss))
    tl.store(lse + row, row_lse)


@triton.jit
def cross_entropy_backward_kernel(
    logits,  # [N, V], rows `row_stride` apart
    targets,  # [N] int64
    lse,  # [N] float32
    grad_loss,  # [N] float32: the gradient of each row's loss
    grad_logits,  # [N, V] logits' dtype out, contiguous
    V,
    row_stride,
    ignore_index,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)  # [BV]
    col_ok = cols < V
    target = tl.load(targets + row)
    scale = tl.where(target == ignore_index, 0.0, tl.load(grad_loss + row))
    x = tl.load(logits + row * row_stride + cols, mask=col_ok, other=0.0).to(tl.float32)
    grad = (tl.exp(x - tl.load(lse + row)) - tl.where(cols == target, 1.0, 0.0)) * scale
    tl.store(grad_logits + row * V + cols, grad.to(grad_logits.dtype.element_ty), mask=col_ok)

"""The LM head and its loss together, a chunk of rows at a time: for a training step on the
CPU, where a 100k vocabulary's float32 logits, their log-softmax and their gradient (each
B * T * V * 4 bytes: 1.6 GB at 32 x 128 tokens of cl100k) would otherwise be held at once.

Forward: for each chunk of rows, logits = hidden @ weight.T in float32, each row's
log-sum-exp kept (one float a row) and its loss summed. Backward: each chunk's logits
recomputed, softmax - one-hot scaled by the loss's gradient, then the chunk's share of
d hidden and d weight. The same function as F.cross_entropy(hidden @ weight.T, targets,
ignore_index=IGNORE_INDEX) (the mean over the scored targets; NaN when none is), summed in
another order, at the cost of the head's matmul once more in the backward.

Dimensions: N rows (B * T), C model width, V vocabulary, R rows of a chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charfast.gpt.cross_entropy import IGNORE_INDEX

CHUNK_BYTES = 256 * 2**20  # float32 logits of one chunk: R = CHUNK_BYTES / (4 V) rows


def chunk_rows(vocab: int, chunk_bytes: int | None = None) -> int:
    """Rows of a chunk whose float32 logits fill chunk_bytes (default CHUNK_BYTES)."""
    return max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (4 * vocab))


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, rows: int) -> Tensor:
        scored = targets != IGNORE_INDEX  # [N]
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # [N]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        safe = targets.masked_fill(~scored, 0)  # [N]: an ignored row reads column 0, then is dropped
        for start in range(0, hidden.shape[0], rows):
            end = start + rows
            logits = (hidden[start:end] @ weight.T).float()  # [R, V]
            lse[start:end] = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, safe[start:end, None])[:, 0]  # [R]
            total += ((lse[start:end] - picked) * scored[start:end]).sum()
        count = scored.sum()
        ctx.save_for_backward(hidden, weight, safe, scored, lse, count)
        ctx.rows = rows
        return total / count

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight, safe, scored, lse, count = ctx.saved_tensors
        scale = grad / count  # d loss / d (each scored row's loss)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, hidden.shape[0], ctx.rows):
            end = start + ctx.rows
            chunk = hidden[start:end]  # [R, C]
            probs = torch.exp((chunk @ weight.T).float() - lse[start:end, None])  # [R, V]: softmax
            probs[torch.arange(len(chunk)), safe[start:end]] -= 1.0
            probs *= (scale * scored[start:end])[:, None]  # [R, V]: d loss / d logits
            grad_hidden[start:end] = (probs @ weight.float()).to(hidden.dtype)
            grad_weight += probs.T @ chunk.float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None


def chunked_head_loss(hidden: Tensor, weight: Tensor, targets: Tensor, chunk_bytes: int | None = None) -> Tensor:
    """hidden [..., C], weight [V, C] (the LM head's, no bias), targets [...] int64 -> the
    mean cross-entropy of hidden @ weight.T over the targets that are not IGNORE_INDEX,
    float32, holding at most chunk_bytes (default CHUNK_BYTES) of logits at a time."""
    rows = chunk_rows(weight.shape[0], chunk_bytes)
    return _ChunkedHeadLoss.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), rows)

"""The GPT's fused cross-entropy (kernels/cross_entropy.py) against torch's: each row's loss
and the gradient of the logits, on vocabularies smaller and larger than one tile, with
ignored targets, 16-bit logits and strided rows. On a CPU the kernels run under Triton's
interpreter."""

import pytest
import torch
from backend_cases import TRITON_DEVICES
from torch.nn import functional as F

from charfast.gpt.cross_entropy import IGNORE_INDEX, cross_entropy_rows, mean_cross_entropy


def _inputs(rows, vocab, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=g)).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[1] = IGNORE_INDEX
    targets[2] = vocab - 1  # the last column of the last tile
    return logits.to(device).requires_grad_(), targets.to(device)


def _torch_rows(logits, targets):
    """torch's loss of each row, computed from the logits in float32."""
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("vocab", [37, 5000], ids=["under-a-tile", "two-tiles"])
def test_rows_and_gradient_match_torch(device, dtype, vocab):
    logits, targets = _inputs(5, vocab, device, dtype)
    weight = torch.rand(5, device=device)  # a different gradient for each row
    loss = cross_entropy_rows(logits, targets)
    (grad,) = torch.autograd.grad((loss * weight).sum(), logits)
    expected = _torch_rows(logits, targets)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), logits)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert loss[1] == 0 and (grad[1] == 0).all(), "an ignored target scores and moves nothing"
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    # 16-bit gradients: the same float32 value, rounded once to the logits' dtype.
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(grad.float(), expected_grad.float(), **tolerance)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_strided_rows(device):
    """Rows of a wider buffer (logits[:, :V]): the kernels follow the row stride."""
    wide, targets = _inputs(4, 60, device)
    logits = wide[:, :50]
    targets = targets.clamp(max=49)
    loss = cross_entropy_rows(logits, targets)
    (grad,) = torch.autograd.grad(loss.sum(), wide)
    expected = _torch_rows(logits, targets)
    (expected_grad,) = torch.autograd.grad(expected.sum(), wide)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("bad", [50, -1], ids=["past-the-end", "negative"])
def test_targets_outside_the_vocabulary_give_nan(device, bad):
    logits, targets = _inputs(4, 50, device)
    targets[0] = bad
    loss = cross_entropy_rows(logits, targets)
    assert loss[0].isnan() and torch.isfinite(loss[2:]).all()


@pytest.mark.parametrize(
    "logits, targets, message",
    [
        (torch.zeros(3, 4, 5), torch.zeros(3, dtype=torch.long), "must be \\[N, V\\]"),
        (torch.zeros(3, 5), torch.zeros(4, dtype=torch.long), "must be \\[N, V\\]"),
        (torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, dtype=torch.long), "floating point"),
        (torch.zeros(3, 5), torch.zeros(3, dtype=torch.int32), "targets int64"),
        (torch.zeros(3, 5), torch.zeros(3, dtype=torch.long, device="meta"), "share a device"),
    ],
    ids=["3-d", "rows-differ", "integer-logits", "int32-targets", "devices-differ"],
)
def test_bad_input_is_refused(logits, targets, message):
    with pytest.raises((TypeError, ValueError), match=message):
        cross_entropy_rows(logits, targets)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_opcheck(device):
    logits, targets = _inputs(3, 40, device)
    torch.library.opcheck(torch.ops.charfast.cross_entropy_rows, (logits, targets))


@pytest.mark.gpu
def test_gpu_mean_matches_torch_under_bf16_autocast():
    """What the GPT computes on a GPU: 16-bit logits, the mean over the scored targets."""
    logits, targets = _inputs(64, 3000, "cuda", torch.bfloat16)
    loss = mean_cross_entropy(logits.view(8, 8, -1), targets.view(8, 8))
    (grad,) = torch.autograd.grad(loss, logits)
    expected = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.float(), expected_grad.float(), rtol=1e-2, atol=1e-5)

"""Shared checks that a char-LSTM backend matches the reference, values and gradients.

Every backend's test module calls `assert_matches_reference(backend, ...)` on the odd
shapes of `ODD_CASES`; the reference itself is checked against torch.nn.LSTM in
test_reference.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from charfast import CharEmbedding, TokenCharTable
from charfast.baselines.packed_lstm import padded_lstm_char_embedding

# The Triton kernels run on the CPU only under Triton's interpreter (conftest sets it there).
needs_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton runs on CPU only under TRITON_INTERPRET=1"
)
# Where a Triton test runs: the CPU under the interpreter (CI), CUDA with compiled kernels.
TRITON_DEVICES = [pytest.param("cpu", marks=needs_interpreter), pytest.param("cuda", marks=pytest.mark.gpu)]

# (vocab, max_len, n_chars, char_dim, hidden, idx shape): lengths 0, 1 and max are forced
# into every table; hidden sizes that are not powers of two; one token; many repeats.
ODD_CASES = [
    dict(vocab=13, max_len=7, n_chars=11, char_dim=5, hidden=40, idx_shape=(3, 9)),
    dict(vocab=50, max_len=12, n_chars=30, char_dim=16, hidden=130, idx_shape=(2, 31)),
    dict(vocab=5, max_len=4, n_chars=7, char_dim=3, hidden=1, idx_shape=(1,)),
    dict(vocab=8, max_len=9, n_chars=5, char_dim=6, hidden=9, idx_shape=(64,)),  # many repeats
]


def random_table(vocab: int, max_len: int, n_chars: int, generator: torch.Generator | None = None) -> TokenCharTable:
    """A table with random chars whose lengths include 0, 1 and max_len."""
    g = generator or torch.Generator().manual_seed(1234)
    lengths = torch.randint(0, max_len + 1, (vocab,), generator=g)
    lengths[:3] = torch.tensor([0, 1, max_len])[: min(3, vocab)]
    chars = torch.randint(0, n_chars, (vocab, max_len), generator=g)
    return TokenCharTable(chars, lengths, n_chars, name="random")


def random_idx(vocab: int, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ids of `shape` that include the zero-length, one-char and longest tokens."""
    g = generator or torch.Generator().manual_seed(99)
    idx = torch.randint(0, vocab, shape, generator=g)
    flat = idx.view(-1)
    flat[: min(3, flat.numel())] = torch.tensor([2, 1, 0])[: min(3, flat.numel())]  # longest first
    return idx


def outputs_and_grads(module: CharEmbedding, idx: torch.Tensor, weight: torch.Tensor):
    """(out, {param name: grad}) of module(idx) under the loss sum(out * weight)."""
    module.zero_grad(set_to_none=True)
    out = module(idx)
    (out * weight).sum().backward()
    # A parameter no output depends on (e.g. the LSTM when every token is empty) gets None: zeros.
    return out.detach(), {
        name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for name, p in module.named_parameters()
    }


def kernel_case(hidden: int, vocab: int = 12, max_len: int = 6, idx_shape=(2, 9)) -> dict:
    """A small case for assert_matches_reference of one kernel choice at `hidden`."""
    return dict(vocab=vocab, max_len=max_len, n_chars=9, char_dim=8, hidden=hidden, idx_shape=idx_shape)


# (chars, lengths, ids) of tables whose rows are edge cases of a kernel's row blocks.
EDGE_ROW_CASES = [
    pytest.param([[1, 2, 0], [0, 0, 0], [3, 3, 3]], [2, 0, 3], [1, 1, 0, 2, 1], id="zero-length"),  # among others
    pytest.param([[0, 0, 0], [0, 0, 0]], [0, 0], [0, 1, 1], id="only-zero-length"),
    pytest.param([[4, 5, 6]], [3], [0], id="one-row"),  # U = 1
]


def assert_triton_matches_reference_on(table: TokenCharTable, ids: list[int], hidden: int, device: str, **tol):
    """CharEmbedding("triton") on `table` equals the reference on `ids`: the output and the
    gradient of every parameter (zero where one has none) under a squared-sum loss."""
    fused = CharEmbedding(table, 8, char_dim=4, hidden=hidden, backend="triton").to(device)
    ref = CharEmbedding(table, 8, char_dim=4, hidden=hidden, backend="reference").to(device)
    ref.load_state_dict(fused.state_dict())
    idx = torch.tensor(ids, device=device)
    out, want = fused(idx), ref(idx)
    torch.testing.assert_close(out, want, **tol)
    out.square().sum().backward()
    want.square().sum().backward()
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(grad, torch.zeros_like(q) if q.grad is None else q.grad, msg=name, **tol)


def assert_matches_reference(backend: str, case: dict, dtype=torch.float64, device="cpu", rtol=1e-7, atol=1e-9) -> None:
    """CharEmbedding(backend) equals CharEmbedding("reference") with the same weights:
    output and the gradient of every parameter."""
    table = random_table(case["vocab"], case["max_len"], case["n_chars"])
    idx = random_idx(case["vocab"], case["idx_shape"]).to(device)
    ref = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend="reference")
    ref = ref.to(device=device, dtype=dtype)
    fused = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend=backend)
    fused = fused.to(device=device, dtype=dtype)
    fused.load_state_dict(ref.state_dict())
    weight = torch.randn(*idx.shape, 24, dtype=dtype, device=device)
    out_ref, grads_ref = outputs_and_grads(ref, idx, weight)
    out, grads = outputs_and_grads(fused, idx, weight)
    assert torch.isfinite(out).all(), f"{backend}: non-finite output"
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol, msg=lambda m: f"{backend} output: {m}")
    for name, grad_ref in grads_ref.items():
        assert torch.isfinite(grads[name]).all(), f"{backend}: non-finite grad of {name}"
        torch.testing.assert_close(
            grads[name], grad_ref, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{backend} grad of {name}: {m}"
        )


def low_precision_errors(backend: str, case: dict, dtype: torch.dtype, device: str, forward=None) -> dict[str, tuple]:
    """{"output" or parameter name: (backend's error, nn.LSTM's error, scale)} in dtype.

    Both run from the same dtype parameters: CharEmbedding(backend) (or forward(module, idx)
    when given) and torch.nn.LSTM over the padded distinct tokens (cuDNN on a GPU,
    charfast.baselines.packed_lstm); each error is the max abs difference from the reference run in
    float64 on those parameters (upcast), and scale is that float64 result's max abs value."""
    torch.manual_seed(0)  # the same weights whatever ran before: a budget check must not flake
    table = random_table(case["vocab"], case["max_len"], case["n_chars"])
    idx = random_idx(case["vocab"], case["idx_shape"]).to(device)
    module = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend=backend)
    module = module.to(device=device, dtype=dtype)
    exact = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend="reference")
    exact = exact.to(device=device, dtype=torch.float64)
    exact.load_state_dict(module.state_dict())
    weight = torch.randn(*idx.shape, 24, dtype=dtype, device=device)
    out_exact, grads_exact = outputs_and_grads(exact, idx, weight.double())
    if forward is not None:
        module.forward = lambda ids: forward(module, ids)
    out, grads = outputs_and_grads(module, idx, weight)
    module.forward = lambda ids: padded_lstm_char_embedding(module, ids)  # same parameters, nn.LSTM's kernel
    out_lstm, grads_lstm = outputs_and_grads(module, idx, weight)

    def error(got, want):
        return (got.double() - want).abs().max().item()

    errors = {"output": (error(out, out_exact), error(out_lstm, out_exact), out_exact.abs().max().item())}
    for name, want in grads_exact.items():
        errors[name] = (error(grads[name], want), error(grads_lstm[name], want), want.abs().max().item())
    return errors


def assert_within_lstm_error_budget(
    backend: str,
    case: dict,
    dtype: torch.dtype,
    device: str,
    factor: float = 2.0,
    forward=None,
    name: str | None = None,
) -> None:
    """In 16-bit, the backend (or forward) may err at most `factor` times what torch.nn.LSTM
    errs in the same precision, plus one rounding of the result (dtype's eps times its
    scale): output and every gradient. The budget follows the precision, not a guess."""
    name = name or backend
    for what, (err, lstm_err, scale) in low_precision_errors(backend, case, dtype, device, forward).items():
        budget = factor * lstm_err + torch.finfo(dtype).eps * scale
        assert err <= budget, (
            f"{name} {what} in {dtype}: max error {err:.3e} > budget {budget:.3e} "
            f"(nn.LSTM's error {lstm_err:.3e}, scale {scale:.3e})"
        )


def torch_lstm_autocast_failure(device: str, dtype: torch.dtype) -> str | None:
    """None when torch.nn.LSTM runs forward and backward under autocast(dtype) on `device`,
    else its error's first line. (oneDNN, torch's CPU LSTM, has no bfloat16 LSTM on a CPU
    without AVX-512: "could not create a primitive descriptor".)"""
    lstm = torch.nn.LSTM(8, 8, batch_first=True).to(device)
    try:
        with torch.autocast(device, dtype=dtype):
            out = lstm(torch.randn(2, 3, 8, device=device))[0]
        out.float().sum().backward()
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None

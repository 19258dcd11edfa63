"""The FlashRNN baseline of the benchmarks computes CharEmbedding's function: its input,
weight and output layouts are checked against the reference, values and gradients."""

import pytest
import torch
from backend_cases import ODD_CASES, assert_within_lstm_error_budget, outputs_and_grads, random_idx, random_table

from charfast import CharEmbedding

pytest.importorskip("flashrnn", reason="optional benchmark baseline: pip install flashrnn")
from charfast.baselines.flashrnn import flashrnn_char_embedding  # noqa: E402


class FlashRNNEncoder(torch.nn.Module):
    """Holds a CharEmbedding's parameters and computes its output with flashrnn."""

    def __init__(self, module: CharEmbedding, backend: str):
        super().__init__()
        self.inner, self.backend = module, backend

    def forward(self, idx):
        return flashrnn_char_embedding(self.inner, idx, backend=self.backend)


def outputs_of_both(case, backend, device, dtype):
    """(reference out, grads) in float64/float32 and (flashrnn out, grads) in dtype, same weights."""
    table = random_table(case["vocab"], case["max_len"], case["n_chars"])
    idx = random_idx(case["vocab"], case["idx_shape"]).to(device)
    ref = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend="reference")
    ref = ref.to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    weight = torch.randn(*idx.shape, 24, dtype=ref.proj.weight.dtype, device=device)
    expected = outputs_and_grads(ref, idx, weight)
    baseline = FlashRNNEncoder(ref.to(dtype), backend)
    out, grads = outputs_and_grads(baseline, idx, weight.to(dtype))
    return expected, (out, {name.removeprefix("inner."): grad for name, grad in grads.items()})


@pytest.mark.parametrize("case", ODD_CASES)
def test_layouts_match_the_reference_in_float64(case):
    """flashrnn's pure-PyTorch backend uses the same layouts as its fused kernels."""
    (out_ref, grads_ref), (out, grads) = outputs_of_both(case, "vanilla", "cpu", torch.float64)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    for name, grad_ref in grads_ref.items():
        torch.testing.assert_close(
            grads[name], grad_ref, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"grad of {name}: {m}"
        )


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton_fused", "cuda_fused"])
def test_fused_kernels_in_bfloat16_err_no_more_than_cudnn(backend):
    case = dict(vocab=300, max_len=16, n_chars=40, char_dim=32, hidden=128, idx_shape=(4, 64))
    try:
        assert_within_lstm_error_budget(
            "reference",
            case,
            torch.bfloat16,
            "cuda",
            name=f"flashrnn {backend}",
            forward=lambda module, idx: flashrnn_char_embedding(module, idx, backend=backend),
        )
    except Exception as err:  # noqa: BLE001 - re-raised unless flashrnn's own build broke
        if not _flashrnn_failed_to_build(err):
            raise
        # Seen on an H100 (torch 2.11, triton 3.6, CUDA 13; BENCHMARKS.md): triton_fused's
        # kernel calls tanh on bfloat16, which Triton 3.6's libdevice refuses; cuda_fused's
        # JIT build of its gpu_info extension fails under nvcc 13. The baseline is then absent
        # from the benchmarks (they skip it with the same error), not wrong.
        pytest.xfail(f"flashrnn {backend} does not build here: {type(err).__name__}: {str(err)[:200]}")


def _flashrnn_failed_to_build(err: BaseException) -> bool:
    """Whether err is a compile or extension-build failure raised from flashrnn's own code."""
    import triton

    traceback = err.__traceback__
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame.f_code.co_filename)
        traceback = traceback.tb_next
    in_flashrnn = any("/flashrnn/" in name for name in frames)
    build_error = isinstance(err, triton.compiler.errors.CompilationError) or (
        isinstance(err, RuntimeError) and str(err).startswith("Error building extension")
    )
    return in_flashrnn and build_error


def test_triton_fused_refuses_a_hidden_size_that_is_not_a_power_of_two():
    module = CharEmbedding(random_table(13, 7, 11), 24, char_dim=5, hidden=40)
    with pytest.raises(ValueError, match="hidden size a power of two, got 40"):
        flashrnn_char_embedding(module, torch.arange(13), backend="triton_fused")

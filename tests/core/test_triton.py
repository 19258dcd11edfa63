"""The Triton backend against the reference: values and every gradient.

On CPU the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set by conftest),
so shapes stay small; the GPU tests (bf16, large hidden, long tokens, inductor) skip
without CUDA.
"""

import os
import subprocess
import sys

import pytest
import torch
from backend_cases import (
    ODD_CASES,
    TRITON_DEVICES,
    assert_matches_reference,
    assert_within_lstm_error_budget,
    needs_interpreter,
    random_idx,
    random_table,
)
from host_reads import HostReads

import charfast.backends.triton as triton_backend
from charfast import CharEmbedding
from charfast.backends import resolve_backend, why_unavailable
from charfast.distinct import PAD_ID
from charfast.kernels.blocks import LstmBlocks

# One process runs the kernels either interpreted (CPU tensors; conftest's default) or
# compiled (CUDA): `pytest tests/core/test_triton.py` on a GPU machine runs the `gpu` ones.


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("case", ODD_CASES, ids=lambda case: f"hidden{case['hidden']}")
def test_matches_reference_in_float32(case, device):
    assert_matches_reference("triton", case, torch.float32, device=device, rtol=1e-5, atol=1e-5)


# 16-bit results are judged against what torch.nn.LSTM (cuDNN on a GPU) errs in the same
# precision. On the CPU, bfloat16 runs through the interpreter that conftest teaches
# bfloat16 tl.dot.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("case", ODD_CASES[:2], ids=["hidden40", "hidden130"])
def test_16_bit_errs_no_more_than_torch_lstm(case, device, dtype):
    assert_within_lstm_error_budget("triton", case, dtype, device=device)


@pytest.mark.slow
@needs_interpreter
def test_long_tokens_in_bfloat16_err_no_more_than_torch_lstm():
    """40-char tokens: 40 steps of bf16 rounding of h, forward and back (the GPU's larger
    case is test_large_hidden_in_bfloat16_errs_no_more_than_cudnn)."""
    case = dict(vocab=200, max_len=40, n_chars=64, char_dim=32, hidden=128, idx_shape=(4, 64))
    assert_within_lstm_error_budget("triton", case, torch.bfloat16, device="cpu")


@needs_interpreter
def test_bfloat16_is_refused_where_the_interpreter_gets_its_dot_wrong(monkeypatch, unpatched_interpreter_dot):
    """Triton's own interpreter (up to 3.9, triton-lang/triton#11584) would return garbage."""
    from triton.runtime.interpreter import InterpreterBuilder

    table, gate_table, weight_hh, _, _, ids = _op_inputs(dtype=torch.bfloat16)
    assert triton_backend.interpreter_bfloat16_dot_works()  # conftest's bfloat16 dot
    monkeypatch.setattr(InterpreterBuilder, "create_dot", unpatched_interpreter_dot)
    triton_backend.interpreter_bfloat16_dot_works.cache_clear()
    try:
        if triton_backend.interpreter_bfloat16_dot_works():
            pytest.skip("this Triton's own interpreter multiplies bfloat16 right: nothing to refuse")
        with pytest.raises(TypeError, match="bfloat16 does not run under TRITON_INTERPRET=1"):
            triton_backend.char_lstm_triton(gate_table, weight_hh, table, ids)
    finally:
        triton_backend.interpreter_bfloat16_dot_works.cache_clear()


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_matches_reference_with_many_small_tiles(monkeypatch, device):
    """16-wide tiles: several programs, hidden tiles and reduction tiles, masked tails."""
    monkeypatch.setattr(LstmBlocks, "for_shape", classmethod(lambda cls, *shape: cls(16, 16, 16)))
    case = dict(vocab=40, max_len=9, n_chars=12, char_dim=7, hidden=40, idx_shape=(2, 40))
    assert_matches_reference("triton", case, torch.float32, device=device, rtol=1e-5, atol=1e-5)


def test_rows_per_program_follow_the_tile_sweep():
    """32 rows per program where their programs fit one wave of the multiprocessors, else
    16 (measured at H = 128 and 256 in 16 bits); 16 for wider H and for float32."""
    assert LstmBlocks.for_shape(128, torch.bfloat16, n_rows=3342, multiprocessors=132) == LstmBlocks(32, 64, 64)
    assert LstmBlocks.for_shape(256, torch.float16, n_rows=3342, multiprocessors=132).rows == 32
    assert LstmBlocks.for_shape(128, torch.bfloat16, n_rows=7202, multiprocessors=132).rows == 16
    assert LstmBlocks.for_shape(768, torch.bfloat16, n_rows=3342, multiprocessors=132).rows == 16
    assert LstmBlocks.for_shape(128, torch.float32, n_rows=3342, multiprocessors=132) == LstmBlocks(16, 64, 32)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_every_output_element_is_written(device):
    """Deterministic mode fills every torch.empty with NaN (ints with their max), so an
    element the kernels leave unwritten shows up in the output or a gradient."""
    case = dict(vocab=30, max_len=8, n_chars=9, char_dim=4, hidden=20, idx_shape=(40,))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.empty(2, device=device).isnan().all(), "poisoning is not active"
        assert_matches_reference("triton", case, torch.float32, device=device, rtol=1e-5, atol=1e-5)
        table = random_table(case["vocab"], case["max_len"], case["n_chars"])
        chars, lengths = table.on(device)
        gate_table = torch.randn(case["n_chars"], 80, device=device)
        weight_hh = torch.randn(80, 20, device=device)
        ids = torch.cat([torch.arange(case["vocab"]), torch.full((3,), PAD_ID)]).to(device)
        out = triton_backend.ForwardOutputs(
            *triton_backend.char_lstm_forward_op(gate_table, weight_hh, chars, lengths, ids, table.most_chars(33))
        )
        total_steps = int(lengths.sum())
        assert out.step_count.tolist() == [total_steps]
        assert torch.isfinite(out.h).all(), "unwritten elements in h"
        for name in ("h_prev", "c_prev"):
            assert torch.isfinite(getattr(out, name)[:total_steps]).all(), f"unwritten elements in {name}"
        step_chars = out.step_chars[:total_steps]
        assert ((step_chars >= 0) & (step_chars < case["n_chars"])).all(), "unwritten elements in step_chars"
    finally:
        torch.use_deterministic_algorithms(previous)


@needs_interpreter
def test_real_cl100k_text(cl100k, cl100k_table):
    idx = torch.tensor(cl100k.encode("How many r's are in strawberry? Three: st-r-awbe-r-r-y.")).view(1, -1)
    fused = CharEmbedding(cl100k_table, 16, char_dim=8, hidden=24, backend="triton")
    ref = CharEmbedding(cl100k_table, 16, char_dim=8, hidden=24, backend="reference")
    ref.load_state_dict(fused.state_dict())
    torch.testing.assert_close(fused(idx), ref(idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_only_zero_length_tokens(device):
    """No step to run at all (S = 0): h = 0 and zero gradients, no empty launch fails."""
    table, gate_table, weight_hh, *_ = _op_inputs(device)
    h = triton_backend.char_lstm_triton(gate_table, weight_hh, table, torch.tensor([0], device=device))
    h.sum().backward()
    assert h.shape == (1, weight_hh.shape[1]) and (h == 0).all()
    assert (gate_table.grad == 0).all() and (weight_hh.grad == 0).all()


def _op_inputs(device="cpu", hidden=12, dtype=torch.float32):
    table = random_table(13, 7, 11)
    chars, lengths = table.on(device)
    gate_table = torch.randn(11, 4 * hidden, device=device, dtype=dtype, requires_grad=True)
    weight_hh = (0.3 * torch.randn(4 * hidden, hidden, device=device, dtype=dtype)).requires_grad_()
    ids = torch.tensor([0, 1, 2, 4, 7, 9, 12], device=device)
    return table, gate_table, weight_hh, chars, lengths, ids


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_opcheck(device):
    _, gate_table, weight_hh, chars, lengths, ids = _op_inputs(device)
    # Exactly the steps in use: opcheck compares whole outputs, and rows past them are unwritten.
    total_steps = int(lengths[ids].sum())
    ids = torch.cat([ids, torch.full((2,), PAD_ID, device=device)])
    arguments = (gate_table, weight_hh, chars, lengths, ids, total_steps)
    torch.library.opcheck(triton_backend.char_lstm_forward_op, arguments)


@needs_interpreter
@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda g, w, ids: (g.double(), w.double(), ids), "dtype"),
        (lambda g, w, ids: (g, w.bfloat16(), ids), "dtype"),
        (lambda g, w, ids: (g, w[:, :-1], ids), "weight_hh must be"),
        (lambda g, w, ids: (g[:-1], w, ids), "gate_table must be"),
        (lambda g, w, ids: (g, w, ids.view(1, -1)), "ids must be a 1-D int64"),
        (lambda g, w, ids: (g, w, ids.int()), "ids must be a 1-D int64"),
        (lambda g, w, ids: (g, w, ids.to("meta")), "one device"),
    ],
    ids=[
        "float64",
        "mixed-dtypes",
        "hidden-mismatch",
        "n_chars-mismatch",
        "ids-2d",
        "ids-int32",
        "device-mismatch",
    ],
)
def test_bad_input_is_rejected_before_launch(monkeypatch, bad, message):
    def no_launch(*args, **kwargs):
        raise AssertionError("the kernel was launched on bad input")

    monkeypatch.setattr(triton_backend, "launch_char_lstm_forward", no_launch)
    table, gate_table, weight_hh, _, _, ids = _op_inputs()
    gate_table, weight_hh, ids = bad(gate_table, weight_hh, ids)
    with pytest.raises((TypeError, ValueError), match=message):
        triton_backend.char_lstm_triton(gate_table, weight_hh, table, ids)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("bad_id", [13, 10**12, -2], ids=["past-the-end", "huge", "negative"])
def test_ids_outside_the_table_give_nan_rows_and_run_no_step(device, bad_id):
    """The op cannot refuse them without a host read: their rows are NaN (never a silent
    answer or an out-of-bounds read), and the other rows and the gradients through them
    are those of the valid ids alone."""
    table, gate_table, weight_hh, _, _, ids = _op_inputs(device)
    h = triton_backend.char_lstm_triton(gate_table, weight_hh, table, ids)
    grads = torch.autograd.grad(h.pow(2).sum(), (gate_table, weight_hh))
    with_bad = torch.cat([ids, torch.tensor([bad_id], device=device)])
    h_bad = triton_backend.char_lstm_triton(gate_table, weight_hh, table, with_bad)
    assert h_bad[-1].isnan().all()
    torch.testing.assert_close(h_bad[:-1], h, rtol=0, atol=0)
    for grad, grad_bad in zip(grads, torch.autograd.grad(h_bad[:-1].pow(2).sum(), (gate_table, weight_hh))):
        torch.testing.assert_close(grad_bad, grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_the_op_stays_in_its_buffers_whatever_the_table_holds(device):
    """The kernels never trust the table: lengths past its width, char ids outside the gate
    table and more steps than the capacity the caller sized (a table edited after a
    compiled graph fixed its step bound) stay in bounds; the rows that cannot be answered
    are NaN, the others right."""
    table, gate_table, weight_hh, chars, lengths, ids = _op_inputs(device)
    total = int(lengths[ids].sum())
    h = triton_backend.ForwardOutputs(
        *triton_backend.char_lstm_forward_op(gate_table, weight_hh, chars, lengths, ids, total)
    ).h
    short = triton_backend.ForwardOutputs(
        *triton_backend.char_lstm_forward_op(gate_table, weight_hh, chars, lengths, ids, total // 2)
    )
    lost = short.h.isnan().all(1)
    assert lost.any() and not lost.all()
    torch.testing.assert_close(short.h[~lost], h[~lost], rtol=0, atol=0)
    assert int(short.step_count) <= total // 2
    torch.autograd.grad(short.h[~lost].sum(), (gate_table, weight_hh))  # the backward stays in bounds too
    hostile_lengths = lengths.clone().fill_(chars.shape[1] + 50)
    hostile_chars = chars.to(torch.int32).fill_(10**6)
    out = triton_backend.char_lstm_forward_op(gate_table, weight_hh, hostile_chars, hostile_lengths, ids, 10**4)
    assert torch.isfinite(out[0]).all()  # every length clamped to the width, every char to the gate table


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_padding_rows_are_zero_and_change_nothing(device):
    """PAD_ID rows (what CharEmbedding pads the distinct ids with) give h = 0, and the other
    rows and every gradient equal those of the ids alone."""
    table, gate_table, weight_hh, _, _, ids = _op_inputs(device)
    padded = torch.cat([ids, torch.full((5,), PAD_ID, device=device)])
    h = triton_backend.char_lstm_triton(gate_table, weight_hh, table, ids)
    grads = torch.autograd.grad(h.pow(2).sum(), (gate_table, weight_hh))
    h_padded = triton_backend.char_lstm_triton(gate_table, weight_hh, table, padded)
    grads_padded = torch.autograd.grad(h_padded.pow(2).sum(), (gate_table, weight_hh))
    assert (h_padded[len(ids) :] == 0).all()
    torch.testing.assert_close(h_padded[: len(ids)], h, rtol=0, atol=0)
    for grad, grad_padded in zip(grads, grads_padded):
        torch.testing.assert_close(grad_padded, grad, rtol=1e-6, atol=1e-6)


@needs_interpreter
def test_forward_and_backward_read_nothing_back(monkeypatch):
    """The CPU stand-in for CUDA's sync debug mode (test_no_stream_sync_in_forward_or_backward_on_cuda)."""
    table = random_table(40, 9, 12)
    module = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False)
    idx = random_idx(40, (3, 17))
    reads = HostReads(monkeypatch)
    with reads:
        out = module(idx)
    assert reads.seen == []
    with reads:
        out.pow(2).sum().backward()
    assert reads.seen == []
    with reads:
        CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton")(idx)
    assert reads.seen == ["Tensor.tolist"]  # check_ids=True: the ids' min and max, together
    with reads:
        CharEmbedding(table, 8, char_dim=5, hidden=20, backend="reference", check_ids=False)(idx)
    assert reads.seen, "the probe sees no read where torch.unique makes one"


def test_availability():
    on_cpu = why_unavailable("triton", torch.device("cpu"))
    assert on_cpu is None if triton_backend.KERNELS_INTERPRETED else "TRITON_INTERPRET=1" in on_cpu
    assert "not on mps" in triton_backend.BACKEND.unavailable_reason(torch.device("mps"))
    if torch.cuda.is_available():
        assert resolve_backend("auto", torch.device("cuda")).name == "triton"


# Compiles every kernel for an H100 (sm_90) down to a cubin without a GPU: catches what
# only Triton's compiler checks (types, layouts, loop-carried values, shared memory), not the
# interpreter. Arguments are specialised as a launch specialises them (16-byte aligned
# pointers, H a multiple of 16): Triton 3.6 failed BLOCK_U = 32 only with those. Compiled:
# the recurrences with the tiles for_shape picks in both dtypes and every tuning candidate
# in bf16; the backward's GEMMs over the packed steps with the constants of their launches;
# the GPT's cross-entropy (charfast.gpt.cross_entropy) on 16-bit and float32 logits.
_AOT_COMPILE = """
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from charfast.gpt import cross_entropy
from charfast.kernels import packed_step_gemms as gemms
from charfast.kernels.blocks import TUNING_CANDIDATES, LstmBlocks, dot_precision
from charfast.kernels.char_lstm_backward import char_lstm_backward_kernel
from charfast.kernels.char_lstm_forward import char_lstm_forward_kernel
ALIGNED = [["tt.divisibility", 16]]
DTYPES = ((torch.bfloat16, "bf16"), (torch.float32, "fp32"))
jobs = []  # (what, kernel, signature, constants, num_warps)
configs = [(dtype, name, LstmBlocks.for_shape(hidden, dtype, rows, 132))
           for dtype, name in DTYPES for hidden, rows in ((1024, 1), (128, 3342), (128, 7202))]
configs += [(torch.bfloat16, "bf16", tiles) for tiles in TUNING_CANDIDATES]
for dtype, name, tiles in configs:
    consts = dict(BLOCK_U=tiles.rows, BLOCK_H=tiles.hidden, BLOCK_K=tiles.reduction, DOT_PRECISION=dot_precision(dtype))
    forward = dict(gate_table="*" + name, weight_hh="*" + name, table_chars="*u8", sorted_ids="*i64",
                   sorted_lengths="*i64", offsets="*i64", order="*i64", h_out="*" + name, h_prev="*" + name,
                   c_prev="*fp32", step_chars="*i32", U="i32", H="i32", table_width="i32", n_chars="i32")
    backward = dict(gates="*fp32", c_prev="*fp32", weight_hh="*" + name, grad_h="*" + name,
                    sorted_lengths="*i64", offsets="*i64", order="*i64", dh_carry="*fp32", dc_carry="*fp32",
                    U="i32", H="i32")
    jobs += [((name, tiles), char_lstm_forward_kernel, forward, consts, tiles.num_warps),
             ((name, tiles), char_lstm_backward_kernel, backward, consts, tiles.num_warps)]
table_grad = dict(dgates="*fp32", step_chars="*i32", step_count="*i64", grad_gate_table="*fp32", H="i32")
jobs.append((("table grad",), gemms.gate_table_grad_kernel, table_grad, gemms.gate_table_grad_constants(), 4))
for dtype, name in DTYPES:
    recompute = dict(gate_table="*" + name, weight_hh="*" + name, h_prev="*" + name, step_chars="*i32",
                     step_count="*i64", gates="*fp32", H="i32")
    weight_grad = dict(dgates="*fp32", h_prev="*" + name, step_count="*i64", partial="*fp32", H="i32")
    for size in (32, 1024):  # hidden (and steps) narrower than a tile, and wide
        jobs += [((name, "recompute", size), gemms.recompute_gates_kernel, recompute,
                  gemms.recompute_gates_constants(size, dtype), 4),
                 ((name, "weight grad", size), gemms.weight_hh_grad_kernel, weight_grad,
                  gemms.weight_hh_grad_constants(size, dtype), 4)]
for _, name in DTYPES:
    rows = dict(logits="*" + name, targets="*i64")
    forward = dict(rows, loss="*fp32", lse="*fp32", V="i32", row_stride="i32", ignore_index="i32")
    backward = dict(rows, lse="*fp32", grad_loss="*fp32", grad_logits="*" + name, V="i32", row_stride="i32",
                    ignore_index="i32")
    consts = dict(BLOCK_V=cross_entropy.VOCAB_TILE)
    jobs += [((name, "cross-entropy"), cross_entropy.cross_entropy_forward_kernel, forward, consts, 4),
             ((name, "cross-entropy grad"), cross_entropy.cross_entropy_backward_kernel, backward, consts, 4)]
for what, kernel, signature, consts, num_warps in jobs:
    aligned = {(i,): ALIGNED for i, (arg, kind) in enumerate(signature.items()) if kind[0] == "*" or arg == "H"}
    signature = dict(signature, **dict.fromkeys(consts, "constexpr"))
    compiled = triton.compile(ASTSource(kernel, signature, consts, aligned), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=num_warps))
    assert "cubin" in compiled.asm, what
    assert compiled.metadata.shared <= 100 * 1024, (what, compiled.metadata.shared)
print("compiled", len(jobs))
"""


@pytest.mark.slow
def test_kernels_compile_for_a_gpu_without_one():
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-c", _AOT_COMPILE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def _compile_matches_eager(device, compile_backend, dtype=torch.float32, rtol=1e-5, atol=1e-5):
    table = random_table(13, 7, 11)
    idx = random_idx(13, (3, 9)).to(device)
    fused = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton").to(device, dtype)
    ref = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="reference").to(device, dtype)
    ref.load_state_dict(fused.state_dict())
    compiled = torch.compile(fused, fullgraph=True, backend=compile_backend)
    for module in (compiled, ref):
        module(idx).pow(2).sum().backward()
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    with torch.no_grad():
        torch.testing.assert_close(compiled(idx), ref(idx), rtol=rtol, atol=atol)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@needs_interpreter
def test_compile_fullgraph_through_aot_autograd(fresh_dynamo):
    _compile_matches_eager("cpu", "aot_eager")


# ------------------------------------------------------------------ GPU only
@pytest.mark.gpu
def test_compile_fullgraph_with_inductor_on_cuda(fresh_dynamo):
    _compile_matches_eager("cuda", "inductor")


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [768, 1024])
def test_large_hidden_and_long_tokens(hidden):
    case = dict(vocab=300, max_len=128, n_chars=256, char_dim=64, hidden=hidden, idx_shape=(4, 256))
    assert_matches_reference("triton", case, torch.float32, device="cuda", rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_large_hidden_in_bfloat16_errs_no_more_than_cudnn():
    case = dict(vocab=300, max_len=128, n_chars=256, char_dim=64, hidden=1024, idx_shape=(4, 256))
    assert_within_lstm_error_budget("triton", case, torch.bfloat16, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "inductor"])
def test_no_stream_sync_in_forward_or_backward_on_cuda(compiled, fresh_dynamo):
    """Neither the forward nor the backward reads anything back (the count of steps in use
    stays on the device)."""
    table = random_table(40, 9, 12)
    module = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False).cuda()
    run = torch.compile(module, fullgraph=True) if compiled else module
    idx = random_idx(40, (3, 17)).cuda()
    run(idx).sum().backward()  # compiles outside the checked region
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run(idx).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _gpu_module_and_twin(seed=0):
    """A triton CharEmbedding on CUDA (no eager id check: that one reads) and an equal copy."""
    table = random_table(40, 9, 12)
    torch.manual_seed(seed)
    module = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False).cuda()
    twin = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False).cuda()
    twin.load_state_dict(module.state_dict())
    return module, twin


def _assert_same_step(out, module, twin, idx):
    """out and module's gradients equal what twin computes eagerly on idx."""
    twin.zero_grad(set_to_none=True)
    out_twin = twin(idx)
    out_twin.pow(2).sum().backward()
    torch.testing.assert_close(out, out_twin, rtol=1e-6, atol=1e-6)
    for (name, p), p_twin in zip(module.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, p_twin.grad, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["tiled", "resident", "split-stepped", "split-persistent"])
def test_forward_and_backward_replay_from_a_cuda_graph(monkeypatch, kernels):
    """With no host read, one training step's forward and backward are captured once and
    replayed on new ids: outputs and gradients equal an eager step's (the same kernels)."""
    monkeypatch.setenv("CHARFAST_TRITON_FORWARD", kernels)
    monkeypatch.setenv("CHARFAST_TRITON_BACKWARD", kernels)
    module, twin = _gpu_module_and_twin()
    static_idx = random_idx(40, (3, 17)).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on the capture stream: compiles the kernels
        for _ in range(2):
            module.zero_grad(set_to_none=True)
            module(static_idx).pow(2).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    module.zero_grad(set_to_none=True)  # the graph allocates the .grad tensors it then refills
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = module(static_idx)
        static_out.pow(2).sum().backward()
    for seed in (1, 2):
        idx = random_idx(40, (3, 17), torch.Generator().manual_seed(seed)).cuda()
        static_idx.copy_(idx)
        graph.replay()
        _assert_same_step(static_out, module, twin, idx)


@pytest.mark.gpu
def test_compile_reduce_overhead_runs_in_cuda_graphs(fresh_dynamo):
    """torch.compile(mode="reduce-overhead"): inductor's CUDA graphs take the forward and
    backward (a host read or a CPU tensor would make it skip them), and the steps are right."""
    from torch._dynamo.utils import counters

    module, twin = _gpu_module_and_twin()
    compiled = torch.compile(module, mode="reduce-overhead", fullgraph=True)
    counters.clear()
    for seed in (1, 2, 3, 4):  # the first steps record, the later ones replay
        idx = random_idx(40, (3, 17), torch.Generator().manual_seed(seed)).cuda()
        torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten
        module.zero_grad(set_to_none=True)
        out = compiled(idx)
        out.pow(2).sum().backward()
        _assert_same_step(out.clone(), module, twin, idx)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])

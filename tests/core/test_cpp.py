"""The C++ CPU backend (csrc/): trie construction, values and gradients vs the reference,
gradcheck, opcheck, thread-count independence, input checks, and the build paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backend_cases import (
    ODD_CASES,
    assert_matches_reference,
    assert_within_lstm_error_budget,
    outputs_and_grads,
    random_table,
)

from charfast import CharEmbedding, TokenCharTable
from charfast.backends import cpp, resolve_backend
from charfast.backends.cpp_build import compiler_missing_reason
from charfast.backends.reference import char_lstm_reference

pytestmark = pytest.mark.cpp

REPO = Path(__file__).resolve().parents[2]


def weights(n_chars: int, hidden: int, dtype=torch.float64, seed: int = 0):
    """(gate_table [C, 4H], weight_hh [4H, H]) with gradients, at a scale where gates saturate sometimes."""
    g = torch.Generator().manual_seed(seed)
    gate_table = torch.randn(n_chars, 4 * hidden, generator=g, dtype=dtype).requires_grad_()
    weight_hh = (torch.randn(4 * hidden, hidden, generator=g, dtype=dtype) / hidden**0.5).requires_grad_()
    return gate_table, weight_hh


def text_ids(table: TokenCharTable, encoding, n_tokens: int) -> torch.Tensor:
    from charfast.gpt.corpus import shakespeare_documents

    tokens = encoding.encode_ordinary(shakespeare_documents()[0][1][: 8 * n_tokens])[:n_tokens]
    return torch.unique(torch.tensor(tokens))


# ------------------------------------------------------------------ the tries
def test_vocab_trie_spells_every_token():
    table = random_table(200, 9, 4)  # a small alphabet: many shared prefixes
    trie_nodes, token_node = cpp.vocab_trie(table)
    parent, char, depth = trie_nodes.long().unbind(1)
    # Every (parent, char) pair is one node, and depth = parent's depth + 1.
    assert len({(int(p), int(c)) for p, c in zip(parent, char)}) == trie_nodes.shape[0]
    assert torch.equal(depth[parent >= 0], depth[parent[parent >= 0]] + 1)
    assert torch.equal(depth[parent < 0], torch.ones_like(depth[parent < 0]))
    assert bool((depth[1:] >= depth[:-1]).all()), "nodes must be numbered level by level"
    distinct_prefixes = {
        bytes(table.chars[v, :n].tolist()[:k]) for v, n in enumerate(table.lengths.tolist()) for k in range(1, n + 1)
    }
    assert trie_nodes.shape[0] == len(distinct_prefixes)
    for v, n in enumerate(table.lengths.tolist()):
        spelled, node = [], int(token_node[v])
        while node >= 0:
            spelled.append(int(char[node]))
            node = int(parent[node])
        assert spelled[::-1] == table.chars[v, :n].tolist(), f"token {v}"
    assert cpp.vocab_trie(table)[0] is trie_nodes, "the trie is built once per table"


def test_batch_trie_shares_prefixes():
    words = [b"a", b"ab", b"abc", b"abd", b"", b"b"]
    chars = torch.zeros(len(words), 3, dtype=torch.long)
    for v, w in enumerate(words):
        chars[v, : len(w)] = torch.tensor(list(w), dtype=torch.long)
    table = TokenCharTable(chars, [len(w) for w in words], 256, name="words")
    stats = cpp.batch_trie_stats(table, torch.tensor([0, 1, 2, 3, 4]))
    # a, ab, abc, abd: 4 LSTM steps instead of 9, and only a and ab feed children.
    assert stats == {"trie_nodes": 4, "internal_nodes": 2, "depth": 3, "chars": 9}


def test_trie_is_smaller_on_real_text(cl100k, cl100k_table):
    ids = text_ids(cl100k_table, cl100k, 2000)
    stats = cpp.batch_trie_stats(cl100k_table, ids)
    assert stats["trie_nodes"] < 0.75 * stats["chars"], stats
    assert stats["internal_nodes"] < stats["trie_nodes"], stats


# ------------------------------------------------------------------ values and gradients
@pytest.mark.parametrize("case", ODD_CASES, ids=[f"case{i}" for i in range(len(ODD_CASES))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_reference(case, dtype):
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    assert_matches_reference("cpp", case, dtype=dtype, **tol)


def test_matches_reference_on_real_text(cl100k, cl100k_table):
    ids = text_ids(cl100k_table, cl100k, 1500)
    gate_table, weight_hh = weights(256, 48, dtype=torch.float64)
    h = cpp.char_lstm_cpp(gate_table, weight_hh, cl100k_table, ids)
    h_ref = char_lstm_reference(gate_table, weight_hh, cl100k_table, ids)
    grad_out = torch.randn_like(h)
    grads = torch.autograd.grad((h * grad_out).sum(), (gate_table, weight_hh))
    grads_ref = torch.autograd.grad((h_ref * grad_out).sum(), (gate_table, weight_hh))
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-13)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_16_bit_errs_no_more_than_torch_lstm(dtype):
    assert_within_lstm_error_budget("cpp", ODD_CASES[1], dtype, device="cpu")


def test_runs_under_cpu_bfloat16_autocast_as_the_reference_does():
    """Under torch.autocast("cpu", bfloat16) (a normal way to train) the cpp backend errs, in
    the output and every gradient, at most 2x what the reference errs under the same
    autocast, plus one bfloat16 rounding: both against float64."""
    table = random_table(30, 7, 11)
    idx = torch.randint(0, 30, (3, 17), generator=torch.Generator().manual_seed(5))
    weight = torch.randn(3, 17, 16, dtype=torch.float64)
    exact = CharEmbedding(table, 16, char_dim=8, hidden=24, backend="reference").double()
    out_exact, grads_exact = outputs_and_grads(exact, idx, weight)
    errors = {}
    for backend in ("cpp", "reference"):
        module = CharEmbedding(table, 16, char_dim=8, hidden=24, backend=backend)
        module.load_state_dict(exact.state_dict())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, grads = outputs_and_grads(module, idx, weight.float())
        assert out.dtype == torch.bfloat16
        errors[backend] = {"output": (out.double() - out_exact).abs().max().item()}
        errors[backend].update({n: (g.double() - grads_exact[n]).abs().max().item() for n, g in grads.items()})
    scale = {"output": out_exact.abs().max().item(), **{n: g.abs().max().item() for n, g in grads_exact.items()}}
    eps = torch.finfo(torch.bfloat16).eps
    over = {
        name: f"{err:.2e} > {2 * errors['reference'][name] + eps * scale[name]:.2e}"
        for name, err in errors["cpp"].items()
        if err > 2 * errors["reference"][name] + eps * scale[name]
    }
    assert not over, f"cpp under bfloat16 autocast errs more than the reference: {over}"


def test_half_precision_computes_in_fp32_like_the_reference():
    table = random_table(20, 6, 9)
    gate_table, weight_hh = weights(9, 16, dtype=torch.bfloat16)
    ids = torch.arange(20)
    h = cpp.char_lstm_cpp(gate_table, weight_hh, table, ids)
    assert h.dtype == torch.bfloat16
    torch.testing.assert_close(h, char_lstm_reference(gate_table, weight_hh, table, ids), rtol=1e-2, atol=1e-2)


def test_gradcheck_with_repeated_and_unsorted_ids():
    table = random_table(12, 6, 5)
    gate_table, weight_hh = weights(5, 3)
    ids = torch.tensor([7, 0, 3, 7, 2, 11, 1])  # includes the empty (0), one-char (1) and longest (2) tokens
    assert torch.autograd.gradcheck(lambda g, w: cpp.char_lstm_cpp(g, w, table, ids), (gate_table, weight_hh))


def test_opcheck():
    table = random_table(13, 7, 11)
    trie_nodes, token_node = cpp.vocab_trie(table)
    for dtype in (torch.float32, torch.float64):
        gate_table, weight_hh = weights(11, 6, dtype=dtype)
        torch.library.opcheck(
            torch.ops.charfast.trie_lstm_forward.default,
            (gate_table, weight_hh, trie_nodes, token_node, torch.arange(13)),
        )


def test_same_result_with_one_and_two_threads(cl100k, cl100k_table):
    ids = text_ids(cl100k_table, cl100k, 3000)  # levels of hundreds of nodes: the parallel paths run
    gate_table, weight_hh = weights(256, 128, dtype=torch.float32)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            h = cpp.char_lstm_cpp(gate_table, weight_hh, cl100k_table, ids)
            results.append((h.detach(), *torch.autograd.grad(h.sum(), (gate_table, weight_hh))))
    finally:
        torch.set_num_threads(previous)
    # Not bitwise: the BLAS GEMMs may sum in another order with another thread count. On a
    # 16-core H100 host (torch 2.11, BENCHMARKS.md) 24 of 65,536 elements differed, by at most
    # 5.2e-6 (float32 rounding of |values| ~ 0.05); a wrong parallel path errs by far more.
    for one, two in zip(*results):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ bad input
@pytest.fixture
def op_args():
    table = random_table(13, 7, 11)
    gate_table, weight_hh = weights(11, 6, dtype=torch.float32)
    return gate_table.detach(), weight_hh.detach(), *cpp.vocab_trie(table), torch.arange(13)


@pytest.mark.parametrize(
    "position, bad, message",
    [
        (0, lambda a: a[0].half(), "gate_table must be float32 or float64"),
        (0, lambda a: a[0].long(), "gate_table must be float32 or float64"),
        (1, lambda a: a[1].double(), "weight_hh must have gate_table's dtype"),
        (1, lambda a: a[1][:20], r"weight_hh must be \[4H, H\]"),
        (0, lambda a: a[0][:, :8], r"gate_table must be \[C, 4H\]"),
        (0, lambda a: a[0][:4], "reads char"),  # fewer gate rows than the table's chars
        (4, lambda a: torch.tensor([0, 13]), r"ids must lie in \[0, 13\)"),
        (4, lambda a: torch.tensor([-1]), r"ids must lie in \[0, 13\)"),
        (4, lambda a: a[4].int(), "ids must be a 1-D int64 CPU tensor"),
        (4, lambda a: a[4].view(1, -1), "ids must be a 1-D int64 CPU tensor"),
        (2, lambda a: a[2].long(), "trie_nodes must be the int32 CPU tensor"),
    ],
)
def test_forward_rejects_bad_input(op_args, position, bad, message):
    args = list(op_args)
    args[position] = bad(op_args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.charfast.trie_lstm_forward(*args)


def test_backward_rejects_mismatched_saved_state(op_args):
    gate_table, weight_hh, trie_nodes, token_node, ids = op_args
    h, node_act, node_c = torch.ops.charfast.trie_lstm_forward(*op_args)
    with pytest.raises(RuntimeError, match=r"node_act must be a Float CPU tensor of shape"):
        torch.ops.charfast.trie_lstm_backward(h, weight_hh, node_act[1:], node_c, trie_nodes, token_node, ids, 11)
    with pytest.raises(RuntimeError, match=r"grad_h must be a Float CPU tensor of shape"):
        torch.ops.charfast.trie_lstm_backward(h[1:], weight_hh, node_act, node_c, trie_nodes, token_node, ids, 11)


def test_build_vocab_trie_rejects_bad_tables():
    with pytest.raises(RuntimeError, match=r"char ids must lie in \[0, 5\)"):
        torch.ops.charfast.build_vocab_trie(torch.tensor([[1, 7]]), torch.tensor([2]), 5)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[0, 2\]"):
        torch.ops.charfast.build_vocab_trie(torch.tensor([[1, 2]]), torch.tensor([3]), 5)


# ------------------------------------------------------------------ selection and build
def test_auto_picks_cpp_on_cpu(monkeypatch):
    monkeypatch.delenv("CHARFAST_BACKEND", raising=False)
    assert resolve_backend("auto", torch.device("cpu")).name == "cpp"
    assert "CPU only" in cpp.unavailable_reason(torch.device("cuda"))


def test_missing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-charfast")
    assert "no C++ compiler found" in compiler_missing_reason()


@pytest.mark.slow
def test_jit_build_path_works():
    """csrc/ compiled by torch.utils.cpp_extension.load (cached), in a fresh process that never imports charfast._C."""
    script = (
        "import torch\n"
        "from charfast.backends.cpp_build import jit_build\n"
        "jit_build()\n"
        "import charfast.backends.cpp as cpp, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from backend_cases import random_table\n"
        "from charfast.backends.reference import char_lstm_reference\n"
        "t = random_table(9, 5, 6)\n"
        "g, w = torch.randn(6, 20, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64)\n"
        "ids = torch.arange(9)\n"
        "h = torch.ops.charfast.trie_lstm_forward(g, w, *cpp.vocab_trie(t), ids)[0]\n"
        "torch.testing.assert_close(h, char_lstm_reference(g, w, t, ids), rtol=1e-12, atol=1e-13)\n"
        "assert 'charfast._C' not in sys.modules\n"
        "print('jit ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "jit ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    from charfast import CharEmbedding

    table = random_table(13, 7, 11)
    module = CharEmbedding(table, 8, char_dim=5, hidden=6, backend="cpp").double()
    idx = torch.tensor([[2, 1, 0, 5, 5], [12, 3, 2, 7, 9]])
    grads = []
    for run in (module, torch.compile(module, fullgraph=True)):
        module.zero_grad(set_to_none=True)
        out = run(idx)
        out.square().sum().backward()
        grads.append((out.detach(), *[p.grad.clone() for p in module.parameters()]))
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)

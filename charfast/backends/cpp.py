"""The C++ CPU backend: the char-LSTM run over the prefix trie of a batch's tokens.

The kernels are in csrc/ (char_lstm_trie.cpp: forward and backward; trie.cpp: the tries);
this module gives them their Python side: the per-table vocabulary trie (built once per
TokenCharTable), the fake (meta) implementations torch.compile and opcheck need, and the
autograd formula (the op's backward is the C++ trie_lstm_backward).

The op computes in float32 or float64; float16/bfloat16 inputs are computed in float32 and
the result cast back, as the reference does. Its own dtype check rejects anything else.
"""

from __future__ import annotations

import functools

import torch

from charfast.backends import Backend
from charfast.backends.cpp_build import load_error

_TRIE_KEY = "cpp_vocab_trie"  # in TokenCharTable.backend_state: (trie_nodes [N, 3] int32, token_node [V] int32)


def vocab_trie(table) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix trie of every token of `table` (built on first use, then cached):
    trie_nodes [N, 3] int32 (parent, char, depth per node) and token_node [V] int32."""
    trie = table.backend_state.get(_TRIE_KEY)
    if trie is None:
        if torch.compiler.is_compiling():
            raise RuntimeError(
                "charfast cpp backend: the vocabulary trie must be built before torch.compile "
                "traces the op (CharEmbedding does it; else call vocab_trie(table) first)"
            )
        require_ops()
        trie = torch.ops.charfast.build_vocab_trie(table.chars, table.lengths, table.n_chars)
        table.backend_state[_TRIE_KEY] = trie
    return trie


def batch_trie_stats(table, ids: torch.Tensor) -> dict[str, int]:
    """How much work the trie of `ids` costs: nodes (LSTM steps), internal nodes (GEMM rows),
    depth (levels), and chars (the steps of running each token on its own)."""
    trie_nodes, token_node = vocab_trie(table)  # loads the ops first
    nodes, internal, depth = torch.ops.charfast.trie_batch_stats(trie_nodes, token_node, ids)
    chars = int(table.lengths[ids.cpu()].sum())
    return {"trie_nodes": nodes, "internal_nodes": internal, "depth": depth, "chars": chars}


def _fake_forward(gate_table, weight_hh, trie_nodes, token_node, ids):
    hidden = weight_hh.shape[1]
    torch._check(
        weight_hh.shape[0] == 4 * hidden and gate_table.shape[1] == 4 * hidden,
        lambda: (
            f"charfast::trie_lstm_forward: expected gate_table [C, 4H] and weight_hh [4H, H], "
            f"got {tuple(gate_table.shape)} and {tuple(weight_hh.shape)}"
        ),
    )
    n_nodes = torch.library.get_ctx().new_dynamic_size()  # the batch trie's size depends on the ids
    return (
        gate_table.new_empty(ids.shape[0], hidden),
        gate_table.new_empty(n_nodes, 4 * hidden),
        gate_table.new_empty(n_nodes, hidden),
    )


def _fake_backward(grad_h, weight_hh, node_act, node_c, trie_nodes, token_node, ids, n_chars):
    return weight_hh.new_empty(n_chars, weight_hh.shape[0]), torch.empty_like(weight_hh)


def _setup_context(ctx, inputs, output):
    gate_table, weight_hh, trie_nodes, token_node, ids = inputs
    _, node_act, node_c = output
    ctx.save_for_backward(weight_hh, node_act, node_c, trie_nodes, token_node, ids)
    ctx.n_chars = gate_table.shape[0]
    ctx.mark_non_differentiable(node_act, node_c)  # saved state, not results
    ctx.set_materialize_grads(False)  # so autograd never fills zero grads for them


def _backward(ctx, grad_h, _grad_node_act, _grad_node_c):
    if grad_h is None:
        return None, None, None, None, None
    weight_hh, node_act, node_c, trie_nodes, token_node, ids = ctx.saved_tensors
    grad_gate_table, grad_weight_hh = torch.ops.charfast.trie_lstm_backward(
        grad_h, weight_hh, node_act, node_c, trie_nodes, token_node, ids, ctx.n_chars
    )
    return grad_gate_table, grad_weight_hh, None, None, None


@functools.cache
def ops_load_error() -> str | None:
    """Load the C++ ops and register their Python parts, once; None on success, else why not."""
    reason = load_error()
    if reason is None:
        torch.library.register_fake("charfast::trie_lstm_forward")(_fake_forward)
        torch.library.register_fake("charfast::trie_lstm_backward")(_fake_backward)
        torch.library.register_autograd("charfast::trie_lstm_forward", _backward, setup_context=_setup_context)
    return reason


def require_ops() -> None:
    """Raise a RuntimeError saying why, when the C++ ops cannot be loaded."""
    reason = ops_load_error()
    if reason is not None:
        raise RuntimeError(f"charfast: the cpp backend is unavailable: {reason}")


def char_lstm_cpp(gate_table: torch.Tensor, weight_hh: torch.Tensor, table, ids: torch.Tensor) -> torch.Tensor:
    """h [U, H] after each token's last char (h = 0 for zero-length tokens); see charfast.backends."""
    compute_dtype = torch.float32 if gate_table.dtype in (torch.float16, torch.bfloat16) else gate_table.dtype
    h, _, _ = torch.ops.charfast.trie_lstm_forward(
        gate_table.to(compute_dtype), weight_hh.to(compute_dtype), *vocab_trie(table), ids
    )
    return h.to(weight_hh.dtype)


def unavailable_reason(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the cpp backend runs on CPU only, not {device.type}"
    return ops_load_error()


BACKEND = Backend(
    name="cpp",
    char_lstm=char_lstm_cpp,
    unavailable_reason=unavailable_reason,
    prepare=lambda table, device: vocab_trie(table),
)

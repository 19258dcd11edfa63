"""The reference char-LSTM: pure PyTorch, padded and masked, no packing.

This is the definition of the op; every fused backend is tested against it, and it is
tested against torch.nn.LSTM. Autograd supplies its backward.

Dimensions: U distinct tokens, L time steps (characters), C chars, H hidden.
"""

from __future__ import annotations

import torch

from charfast.backends import Backend


def char_lstm_reference(gate_table: torch.Tensor, weight_hh: torch.Tensor, table, ids: torch.Tensor) -> torch.Tensor:
    """h [U, H] after each token's last char; h = 0 for zero-length tokens."""
    table_chars, table_lengths = table.on(ids.device)
    chars = table_chars[ids].long()  # [U, Lmax]
    lengths = table_lengths[ids]  # [U]
    # On CPU the loop bound is free to read; on an accelerator reading it would stall the
    # host, so there we run the table's full width: steps past a row's end are masked no-ops.
    steps = int(lengths.max()) if ids.device.type == "cpu" and ids.numel() else chars.shape[1]
    compute_dtype = torch.float32 if gate_table.dtype in (torch.float16, torch.bfloat16) else gate_table.dtype
    gate_table = gate_table.to(compute_dtype)
    weight_hh_t = weight_hh.to(compute_dtype).t()  # [H, 4H]
    hidden = weight_hh.shape[1]
    h = gate_table.new_zeros(ids.shape[0], hidden)  # [U, H]
    c = gate_table.new_zeros(ids.shape[0], hidden)  # [U, H]
    for t in range(steps):
        # index_select: a deterministic backward on CPU, unlike gate_table[chars[:, t]]
        gates = gate_table.index_select(0, chars[:, t]) + h @ weight_hh_t  # [U, 4H]
        i, f, g, o = gates.chunk(4, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        active = (lengths > t).unsqueeze(1)  # [U, 1]: rows whose token has a char at step t
        c = torch.where(active, c_next, c)
        h = torch.where(active, h_next, h)
    return h.to(weight_hh.dtype)


BACKEND = Backend(
    name="reference",
    char_lstm=char_lstm_reference,
    unavailable_reason=lambda device: None,
)

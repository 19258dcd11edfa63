"""The char-LSTM op: the LSTM state after each distinct token's characters.

    gate_table [C, 4H] = char_emb [C, D] @ W_ih^T [D, 4H] + b_ih + b_hh

The input projection depends only on the char id, so it is computed once per char (a
tiny table) instead of once per char position; each LSTM step then gathers a row of it.
Autograd carries gate_table's gradient back to char_emb, W_ih and both biases.
"""

from __future__ import annotations

import torch

from charfast.backends import Backend, resolve_backend


def gate_table(
    char_weight: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor
) -> torch.Tensor:
    """[C, 4H] input-gate contribution of every char, biases included."""
    return torch.addmm(bias_ih + bias_hh, char_weight, weight_ih.t())


def char_lstm(
    table,
    ids: torch.Tensor,
    char_weight: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    backend: str | Backend | None = "auto",
) -> torch.Tensor:
    """h [U, H]: the LSTM's state after the last char of each token in `ids` [U] (h = 0 for
    a zero-length token), with torch.nn.LSTM's parameter layout and gate order. An id
    outside [0, V) gets a NaN row (found without reading the ids back to the host).
    """
    outside = (ids < 0) | (ids >= table.vocab_size)  # [U]
    h = token_states(table, ids.masked_fill(outside, 0), char_weight, weight_ih, weight_hh, bias_ih, bias_hh, backend)
    return h.masked_fill(outside[:, None], float("nan"))


def token_states(
    table,
    ids: torch.Tensor,
    char_weight: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    backend: str | Backend | None = "auto",
) -> torch.Tensor:
    """char_lstm for ids [U] the caller knows to be in the table (or, for a backend with
    takes_padded_ids, padded with PAD_ID): the backend runs them as they are."""
    chosen = backend if isinstance(backend, Backend) else resolve_backend(backend, ids.device)
    gates = gate_table(char_weight, weight_ih, bias_ih, bias_hh)  # [C, 4H]
    # Under autocast the gate table comes out in the autocast dtype: run the recurrence in it too.
    return chosen.char_lstm(gates, weight_hh.to(gates.dtype), table, ids)

"""Char encoders built on torch.nn.LSTM itself, the baselines charfast is measured against.

- packed_lstm_*: the original study's approach: nn.LSTM over packed sequences of every
  token position (all B*T tokens, repeats recomputed, lengths copied to the host for
  packing). Also an independent oracle for the tests (torch's own LSTM kernel).
- padded_lstm_char_embedding: nn.LSTM (cuDNN on a GPU) over the batch's distinct tokens
  padded to the longest, h gathered at each length: every token runs the longest one's steps.
- packed_distinct_lstm_char_embedding: nn.LSTM over packed sequences of the distinct tokens:
  each token runs its own length (cuDNN's variable-length path), the framework's best plain use.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pack_padded_sequence


def packed_lstm_states(
    lstm: torch.nn.LSTM, char_emb: torch.nn.Embedding, table, token_ids: torch.Tensor
) -> torch.Tensor:
    """h [N, H] for every entry of token_ids [N] (repeats included), via nn.LSTM on a PackedSequence."""
    table_chars, table_lengths = table.on(token_ids.device)
    lengths = table_lengths[token_ids].long()  # [N]
    steps = max(int(lengths.max()), 1) if token_ids.numel() else 1
    chars = table_chars[token_ids, :steps].long()  # [N, steps]
    # Packing rejects empty sequences: run zero-length tokens for one step, then zero them.
    packed = pack_padded_sequence(char_emb(chars), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)  # h_n [1, N, H], in the caller's order
    return h_n[0] * (lengths > 0).unsqueeze(1).to(h_n.dtype)


def packed_lstm_char_embedding(module, idx: torch.Tensor) -> torch.Tensor:
    """The study's forward for a CharEmbedding's parameters: [...] ids -> [..., d_model]."""
    h = packed_lstm_states(module.lstm, module.char_emb, module.table, idx.reshape(-1))
    return module.proj(h).view(*idx.shape, -1)


def distinct_padded_chars(module, idx: torch.Tensor):
    """The distinct tokens of idx [...], padded to the longest: (chars [U, steps] long,
    lengths [U] long, inverse [N]) with idx.reshape(-1) == ids[inverse]."""
    ids, inverse = torch.unique(idx.reshape(-1), return_inverse=True)  # [U], [N]
    table_chars, table_lengths = module.table.on(idx.device)
    lengths = table_lengths[ids].long()  # [U]
    steps = max(int(lengths.max()), 1) if ids.numel() else 1  # a host sync: fine for a baseline
    return table_chars[ids, :steps].long(), lengths, inverse


def last_char_states(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """h [U, H] at each token's last char from per-step states out [U, steps, H]; 0 for length 0."""
    h = out[torch.arange(out.shape[0], device=out.device), (lengths - 1).clamp(min=0)]  # [U, H]
    return h * (lengths > 0).unsqueeze(1).to(h.dtype)


def padded_lstm_char_embedding(module, idx: torch.Tensor) -> torch.Tensor:
    """nn.LSTM over the distinct tokens of idx [...] padded to the longest -> [..., d_model]."""
    chars, lengths, inverse = distinct_padded_chars(module, idx)
    out, _ = module.lstm(module.char_emb(chars))  # [U, steps, H]
    h = last_char_states(out, lengths)
    return module.proj(h).index_select(0, inverse).view(*idx.shape, -1)


def packed_distinct_lstm_char_embedding(module, idx: torch.Tensor) -> torch.Tensor:
    """nn.LSTM over packed sequences of the distinct tokens of idx [...] -> [..., d_model]."""
    ids, inverse = torch.unique(idx.reshape(-1), return_inverse=True)  # [U], [N]
    h = packed_lstm_states(module.lstm, module.char_emb, module.table, ids)  # [U, H]
    return module.proj(h).index_select(0, inverse).view(*idx.shape, -1)

"""FlashRNN (NX-AI's fused RNN kernels, `pip install flashrnn`) as a char encoder baseline.

FlashRNN runs fixed-length batches, so it gets what cuDNN gets: the batch's distinct
tokens padded to the longest, h read at each token's last char. Its LSTM takes the input
projection precomputed (Wx [U, steps, 4, 1, H], gates i, f, z, o like torch's i, f, g, o),
so it reads the same per-char gate table as charfast's kernels, and R [4, 1, H, H] is
torch's weight_hh [4H, H] viewed per gate.
"""

from __future__ import annotations

import torch

from charfast.baselines.packed_lstm import distinct_padded_chars, last_char_states
from charfast.char_lstm_op import gate_table

FLASHRNN_BACKENDS = ("cuda_fused", "triton_fused", "vanilla")


def flashrnn_char_embedding(module, idx: torch.Tensor, backend: str = "triton_fused") -> torch.Tensor:
    """A CharEmbedding's output for idx [...] computed with flashrnn -> [..., d_model]."""
    from flashrnn import flashrnn  # optional: only the benchmarks and their tests import this module

    if backend not in FLASHRNN_BACKENDS:
        raise ValueError(f"flashrnn_char_embedding: backend must be one of {FLASHRNN_BACKENDS}, got {backend!r}")
    lstm = module.lstm
    hidden = lstm.hidden_size
    if backend == "triton_fused" and hidden & (hidden - 1):
        raise ValueError(
            f"flashrnn_char_embedding: backend 'triton_fused' needs the module's hidden size a power "
            f"of two, got {hidden} (use 'cuda_fused' or 'vanilla')"
        )
    chars, lengths, inverse = distinct_padded_chars(module, idx)  # [U, steps], [U], [N]
    gates = gate_table(module.char_emb.weight, lstm.weight_ih_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)  # [C, 4H]
    wx = gates[chars].view(*chars.shape, 4, 1, hidden)  # [U, steps, 4, 1, H]
    recurrent = lstm.weight_hh_l0.view(4, 1, hidden, hidden)  # [4, 1, H, H]
    bias = torch.zeros(4, 1, hidden, device=wx.device, dtype=wx.dtype)  # biases are in the gate table
    dtype = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}[
        wx.dtype
    ]
    states, _ = flashrnn(wx, recurrent.to(wx.dtype), bias, backend=backend, dtype=dtype)  # [2, U, steps, 1, H]
    h = last_char_states(states[0, :, :, 0], lengths)  # [U, H]
    return module.proj(h).index_select(0, inverse).view(*idx.shape, -1)

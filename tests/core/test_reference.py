"""The reference backend against torch.nn.LSTM with the same weights: values and gradients."""

import pytest
import torch
from backend_cases import ODD_CASES, outputs_and_grads, random_idx, random_table

from charfast import CharEmbedding
from charfast.baselines.packed_lstm import (
    packed_distinct_lstm_char_embedding,
    packed_lstm_char_embedding,
    padded_lstm_char_embedding,
)


def per_token_lstm_embedding(module: CharEmbedding, idx: torch.Tensor) -> torch.Tensor:
    """torch.nn.LSTM run on each position's token alone (batch of one): the plainest oracle."""
    outputs = []
    for token in idx.reshape(-1).tolist():
        n = int(module.table.lengths[token])
        if n == 0:
            h = module.proj.weight.new_zeros(module.lstm.hidden_size)
        else:
            chars = module.table.chars[token, :n].long().unsqueeze(0)  # [1, n]
            _, (h_n, _) = module.lstm(module.char_emb(chars))
            h = h_n[0, 0]
        outputs.append(module.proj(h))
    return torch.stack(outputs).view(*idx.shape, -1)


class Oracle(torch.nn.Module):
    """Holds a CharEmbedding's parameters and computes with an nn.LSTM-based encoder."""

    def __init__(self, module, encoder):
        super().__init__()
        self.inner, self.encoder = module, encoder

    def forward(self, idx):
        return self.encoder(self.inner, idx)


@pytest.mark.parametrize(
    "encoder",
    [
        per_token_lstm_embedding,
        packed_lstm_char_embedding,
        padded_lstm_char_embedding,
        packed_distinct_lstm_char_embedding,
    ],
    ids=["per-token", "packed", "padded", "packed-distinct"],
)
@pytest.mark.parametrize("case", ODD_CASES)
def test_reference_matches_nn_lstm_in_float64(case, encoder):
    table = random_table(case["vocab"], case["max_len"], case["n_chars"])
    idx = random_idx(case["vocab"], case["idx_shape"])
    module = CharEmbedding(table, 24, char_dim=case["char_dim"], hidden=case["hidden"], backend="reference").double()
    weight = torch.randn(*idx.shape, 24, dtype=torch.float64)
    out, grads = outputs_and_grads(module, idx, weight)
    oracle = Oracle(module, encoder)
    out_lstm, grads_lstm = outputs_and_grads(oracle, idx, weight)
    torch.testing.assert_close(out, out_lstm, rtol=1e-12, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, grads_lstm[f"inner.{name}"], rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"grad of {name}: {m}"
        )
    assert any(g.abs().sum() > 0 for g in grads.values()), "the loss must reach the parameters"


def test_reference_on_real_cl100k_text(cl100k, cl100k_table):
    idx = torch.tensor(cl100k.encode("How many r's are in strawberry? Three: st-r-awbe-r-r-y.")).view(1, -1)
    module = CharEmbedding(cl100k_table, 16, char_dim=8, hidden=12, backend="reference").double()
    torch.testing.assert_close(module(idx), per_token_lstm_embedding(module, idx), rtol=1e-12, atol=1e-12)


def test_float32_reference_is_close_to_float64():
    table = random_table(20, 10, 9)
    idx = random_idx(20, (4, 8))
    module = CharEmbedding(table, 16, char_dim=8, hidden=33, backend="reference")
    exact = module.double()(idx)
    module.float()
    torch.testing.assert_close(module(idx).double(), exact, rtol=1e-5, atol=1e-6)

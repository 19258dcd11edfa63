"""Ids outside the table, negative ones included: a ValueError with check_ids (eager), NaN
rows without it (and under torch.compile), on every backend, in training and through the
inference cache; never another token's row, never a crash."""

import pytest
import torch
from backend_cases import needs_interpreter, random_table

from charfast import CharEmbedding, char_lstm

VOCAB = 10
BACKENDS = [
    "reference",
    pytest.param("cpp", marks=pytest.mark.cpp),
    pytest.param("triton", marks=needs_interpreter),
]
MODES = ["train", "cached"]
BAD_IDS = [-1, -VOCAB, VOCAB, 2**31 - 1, -(2**40)]


def _module(backend: str, check_ids: bool) -> CharEmbedding:
    return CharEmbedding(random_table(VOCAB, 5, 7), 8, char_dim=4, hidden=6, backend=backend, check_ids=check_ids)


def _forward(module: CharEmbedding, idx: torch.Tensor, mode: str) -> torch.Tensor:
    module.train(mode == "train")
    with torch.set_grad_enabled(mode == "train"):
        return module(idx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", BAD_IDS)
def test_an_id_outside_the_table_gets_a_nan_row_without_check_ids(backend, mode, bad):
    module = _module(backend, check_ids=False)
    idx = torch.tensor([[3, bad, 3], [bad, 0, 9]])
    out = _forward(module, idx, mode)
    assert torch.isnan(out[0, 1]).all() and torch.isnan(out[1, 0]).all()
    good = _forward(module, torch.tensor([[3, 3], [0, 9]]), mode)
    torch.testing.assert_close(out[:, [0, 2]][0], good[0])  # the other rows keep their values
    torch.testing.assert_close(out[1, 1:], good[1])
    if mode == "train":
        out.nan_to_num().sum().backward()  # the backward runs too, without a crash


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", BAD_IDS)
def test_an_id_outside_the_table_is_refused_with_check_ids(backend, mode, bad):
    module = _module(backend, check_ids=True)
    with pytest.raises(ValueError, match=rf"token id {bad} is out of range \[0, {VOCAB}\)"):
        _forward(module, torch.tensor([2, bad, 4]), mode)


@needs_interpreter
def test_compiled_forward_gives_nan_rows_for_ids_outside_the_table():
    torch._dynamo.reset()
    module = _module("triton", check_ids=True)  # a trace cannot read ids back: NaN rows instead
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    out = compiled(torch.tensor([-1, 4, VOCAB]))
    assert torch.isnan(out[[0, 2]]).all() and torch.isfinite(out[1]).all()
    torch._dynamo.reset()


def test_the_op_gives_nan_rows_for_ids_outside_the_table():
    module = _module("reference", check_ids=False)
    lstm = module.lstm
    weights = (module.char_emb.weight, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    h = char_lstm(module.table, torch.tensor([-1, 2, VOCAB]), *weights, backend="reference")
    assert torch.isnan(h[[0, 2]]).all() and torch.isfinite(h[1]).all()

"""CharEmbedding.once_per_step: one char forward and one char backward per optimizer step
give the gradients (and, after optimizer steps, the parameters) of a forward and backward
per micro-batch, to float64 round-off; errors, exceptions, nesting and torch.compile."""

import pytest
import torch
from backend_cases import needs_interpreter, random_table

from charfast import CharEmbedding

VOCAB, D_MODEL = 40, 12
BACKENDS = [
    ("reference", torch.float64),
    pytest.param("cpp", torch.float64, marks=pytest.mark.cpp),
    pytest.param("triton", torch.float32, marks=needs_interpreter),  # the kernels take no float64
]
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


class TinyModel(torch.nn.Module):
    """A char embedding under a small nonlinear head, as a model's first layer sees it."""

    def __init__(self, backend: str, dtype: torch.dtype):
        super().__init__()
        self.char_emb = CharEmbedding(random_table(VOCAB, 7, 9), D_MODEL, char_dim=5, hidden=10, backend=backend)
        self.head = torch.nn.Linear(D_MODEL, 3)
        self.to(dtype)

    def forward(self, idx, targets):
        return torch.nn.functional.cross_entropy(
            self.head(torch.tanh(self.char_emb(idx))).flatten(0, 1), targets.flatten()
        )


def _micro_batches(kind: str, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "disjoint":  # no id in two micro-batches
        ids = torch.randperm(VOCAB, generator=g)[: k * 6].view(k, 2, 3)
    elif kind == "identical":  # every micro-batch the same ids
        ids = torch.randint(0, VOCAB, (1, 2, 5), generator=g).expand(k, 2, 5).clone()
    else:  # random, with the zero-length (special) token 0 in every micro-batch
        ids = torch.randint(0, VOCAB, (k, 2, 5), generator=g)
        ids[:, 0, 0] = 0
    return ids, torch.randint(0, 3, ids.shape, generator=g)


def _train(model: TinyModel, batches, steps: int, once: bool) -> dict:
    """AdamW steps over the micro-batches (grad_accum = their number); the gradients of the
    last step and the parameters after all of them."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    xs, ys = batches
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        block = model.char_emb.once_per_step(xs) if once else torch.enable_grad()
        with block:
            for x, y in zip(xs, ys):
                (model(x, y) / len(xs)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    return {"grads": grads, "params": {n: p.detach().clone() for n, p in model.named_parameters()}}


@pytest.mark.parametrize("backend, dtype", BACKENDS)
@pytest.mark.parametrize("kind", ["disjoint", "identical", "random"])
def test_once_per_step_equals_a_backward_per_micro_batch(backend, dtype, kind):
    torch.manual_seed(0)
    per_micro_batch = TinyModel(backend, dtype)
    once = TinyModel(backend, dtype)
    once.load_state_dict(per_micro_batch.state_dict())
    batches = _micro_batches(kind)
    want = _train(per_micro_batch, batches, steps=3, once=False)
    got = _train(once, batches, steps=3, once=True)
    for what in ("grads", "params"):
        for name, value in want[what].items():
            torch.testing.assert_close(
                got[what][name], value, **TOLERANCE[dtype], msg=lambda m, name=name, what=what: f"{what} {name}: {m}"
            )


@pytest.mark.parametrize("backend, dtype", BACKENDS)
def test_the_char_lstm_runs_once_forward_and_once_backward(backend, dtype, monkeypatch):
    model = TinyModel(backend, dtype)
    calls = []
    original = model.char_emb._encode
    monkeypatch.setattr(model.char_emb, "_encode", lambda ids, b: calls.append(len(ids)) or original(ids, b))
    xs, ys = _micro_batches("random")
    with model.char_emb.once_per_step(xs):
        for x, y in zip(xs, ys):
            model(x, y).backward()
    assert len(calls) == 1 and calls[0] == min(xs.numel(), VOCAB)  # sized by the ids given, not the distinct ones
    lstm = model.char_emb.lstm
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0


def test_an_id_outside_the_steps_union_is_refused_or_nan():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("disjoint")
    with model.char_emb.once_per_step(xs[:2]):
        with pytest.raises(ValueError, match=r"token id \d+ is not among the ids given to once_per_step"):
            model(xs[3], ys[3])
        model.char_emb.check_ids = False
        out = model.char_emb(torch.cat([xs[0].flatten(), xs[3].flatten()]))
        assert torch.isnan(out[xs[0].numel() :]).all() and torch.isfinite(out[: xs[0].numel()]).all()


def test_leaving_by_an_exception_runs_no_backward():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    with pytest.raises(KeyError, match="boom"):
        with model.char_emb.once_per_step(xs):
            model(xs[0], ys[0]).backward()
            raise KeyError("boom")
    assert all(p.grad is None for p in model.char_emb.parameters())
    assert model.head.weight.grad is not None  # the rest of the model kept what its backward gave
    with model.char_emb.once_per_step(xs):  # and the module is usable again
        model(xs[0], ys[0]).backward()
    assert model.char_emb.lstm.weight_hh_l0.grad is not None


def test_blocks_do_not_nest_and_bad_ids_are_named():
    model = TinyModel("reference", torch.float64)
    xs, _ = _micro_batches("random")
    with model.char_emb.once_per_step(xs):
        with pytest.raises(RuntimeError, match="already inside a once_per_step block"):
            with model.char_emb.once_per_step(xs):
                pass
    with pytest.raises(TypeError, match="idx must hold integer token ids"):
        with model.char_emb.once_per_step([xs[0], xs[1].float()]):
            pass
    with pytest.raises(ValueError, match=rf"token id {VOCAB} is out of range"):
        with model.char_emb.once_per_step(torch.tensor([1, VOCAB])):
            pass


def test_outside_the_block_the_module_runs_as_before():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    before = model.char_emb(xs[0]).detach()
    with model.char_emb.once_per_step(xs):
        inside = model.char_emb(xs[0]).detach()
    torch.testing.assert_close(inside, before, rtol=0, atol=0)
    assert model.char_emb._step_rows is None


@needs_interpreter
def test_a_compiled_model_is_traced_once_for_every_step():
    torch._dynamo.reset()
    model = TinyModel("triton", torch.float32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        xs, ys = _micro_batches("random", seed=step)  # other ids, other distinct counts, every step
        stance = "fail_on_recompile" if step > 0 else "default"
        with torch.compiler.set_stance(stance):
            with model.char_emb.once_per_step(xs):
                for x, y in zip(xs, ys):
                    (compiled(x, y) / len(xs)).backward()
        optimizer.step()
        optimizer.zero_grad()
    torch._dynamo.reset()


def test_a_backward_after_the_block_raises_instead_of_dropping_the_gradient():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    with model.char_emb.once_per_step(xs):
        loss = model(xs[0], ys[0])  # a framework's step may run its backward after the forward returns
    with pytest.raises(RuntimeError, match="after its once_per_step block ended"):
        loss.backward()
    assert all(p.grad is None for p in model.char_emb.parameters())
    with model.char_emb.once_per_step(xs):  # inside the block, the same step trains the char encoder
        model(xs[0], ys[0]).backward()
    assert all(p.grad is not None for p in model.char_emb.parameters())


def test_a_backward_after_a_block_left_by_an_exception_raises_too():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    with pytest.raises(KeyError):
        with model.char_emb.once_per_step(xs):
            loss = model(xs[0], ys[0])
            raise KeyError("boom")
    with pytest.raises(RuntimeError, match="after its once_per_step block ended"):
        loss.backward()


def _changes_in_place(table):
    """Each in-place way to change a table: assigning its tensors, editing them with torch."""
    yield "assign lengths", lambda: setattr(table, "lengths", table.lengths.clone().fill_(1))
    yield "assign chars", lambda: setattr(table, "chars", table.chars.flip(1).contiguous())
    yield "edit lengths", lambda: table.lengths.__setitem__(3, 1)
    yield "edit chars", lambda: table.chars.__setitem__((5, 0), (int(table.chars[5, 0]) + 1) % table.n_chars)


def test_assigning_a_table_inside_the_block_is_refused():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    table = model.char_emb.table
    with model.char_emb.once_per_step(xs):
        with pytest.raises(RuntimeError, match="cannot assign table inside a once_per_step block"):
            model.char_emb.table = random_table(VOCAB, 7, 9, torch.Generator().manual_seed(1))
        model(xs[0], ys[0]).backward()
    assert model.char_emb.table is table and model.char_emb.lstm.weight_hh_l0.grad is not None
    model.char_emb.table = random_table(VOCAB, 7, 9, torch.Generator().manual_seed(1))  # between steps it is taken


@pytest.mark.parametrize("change", range(4))
def test_a_table_changed_in_place_inside_the_block_is_refused(change):
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    name, apply = list(_changes_in_place(model.char_emb.table))[change]
    with pytest.raises(RuntimeError, match="the table changed inside the once_per_step block"):
        with model.char_emb.once_per_step(xs):
            model(xs[0], ys[0]).backward()
            apply()
            model(xs[1], ys[1])  # the next forward sees it
    with pytest.raises(RuntimeError, match="the table changed inside the once_per_step block"):
        with model.char_emb.once_per_step(xs):  # a change after the last forward: the block's end sees it
            model(xs[0], ys[0]).backward()
            list(_changes_in_place(model.char_emb.table))[change][1]()
    assert all(p.grad is None for p in model.char_emb.parameters()), name  # no char backward from stale rows


def test_empty_ids_keep_the_blocks_contract():
    model = TinyModel("reference", torch.float64)
    xs, ys = _micro_batches("random")
    with model.char_emb.once_per_step(torch.empty(0, dtype=torch.long)):
        with pytest.raises(ValueError, match="is not among the ids given to once_per_step"):
            model(xs[0], ys[0])
        with pytest.raises(RuntimeError, match="already inside a once_per_step block"):
            with model.char_emb.once_per_step(xs):
                pass
        model.char_emb.check_ids = False
        assert torch.isnan(model.char_emb(xs[0])).all()
        assert model.char_emb(xs[0][:, :0]).shape == (2, 0, D_MODEL)
    assert all(p.grad is None for p in model.char_emb.parameters())

"""CharEmbedding: dedup, study init, inference cache, backend selection and bad input."""

import logging

import pytest
import torch
from backend_cases import TRITON_DEVICES, random_idx, random_table

import charfast.backends as backends
from charfast import CharEmbedding, TokenCharTable


@pytest.fixture
def table():
    return random_table(30, 9, 12)


@pytest.fixture
def module(table):
    return CharEmbedding(table, 20, char_dim=6, hidden=10, backend="reference")


def test_shapes_and_parameters(module, table):
    idx = random_idx(30, (2, 3, 5))
    assert module(idx).shape == (2, 3, 5, 20)
    assert isinstance(module.char_emb, torch.nn.Embedding) and module.char_emb.num_embeddings == table.n_chars
    assert isinstance(module.lstm, torch.nn.LSTM) and module.lstm.batch_first
    assert module.lstm.weight_ih_l0.shape == (40, 6) and module.lstm.weight_hh_l0.shape == (40, 10)
    assert isinstance(module.proj, torch.nn.Linear) and module.proj.out_features == 20


def test_study_initialisation_sets_forget_bias_to_one(module):
    for bias in (module.lstm.bias_ih_l0, module.lstm.bias_hh_l0):
        assert torch.all(bias[10:20] == 1.0)
        assert not torch.all(bias[:10] == 1.0)  # the other gates keep torch's random init


def test_lstm_runs_once_per_distinct_token(module, monkeypatch):
    seen = []
    original = module._encode
    monkeypatch.setattr(module, "_encode", lambda ids, backend: seen.append(ids) or original(ids, backend))
    idx = torch.tensor([[5, 5, 7, 5], [7, 2, 2, 5]])
    out = module(idx)
    assert seen[0].tolist() == [2, 5, 7]
    assert torch.equal(out[0, 0], out[1, 3]) and torch.equal(out[0, 2], out[1, 0])


def test_zero_length_token_gets_only_the_projection_bias(module, table):
    empty_token = int((table.lengths == 0).nonzero()[0])
    out = module(torch.tensor([empty_token]))
    torch.testing.assert_close(out[0], module.proj.bias, rtol=0, atol=0)


def test_output_does_not_depend_on_context(module):
    a = module(torch.tensor([[3, 4, 5]]))
    b = module(torch.tensor([[9, 4, 1, 4]]))
    torch.testing.assert_close(a[0, 1], b[0, 1])
    torch.testing.assert_close(a[0, 1], b[0, 3])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_any_integer_dtype(module, dtype):
    idx = random_idx(30, (3, 4))
    torch.testing.assert_close(module(idx.to(dtype)), module(idx))


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 3)])
def test_empty_idx_gives_empty_output(module, shape):
    out = module(torch.zeros(shape, dtype=torch.long))
    assert out.shape == (*shape, 20)
    out.sum().backward()  # still a valid graph


# ---------------------------------------------------------------- inference cache
def _cache_builds(module, monkeypatch):
    builds = []
    original = module._compute_vocabulary_rows
    monkeypatch.setattr(module, "_compute_vocabulary_rows", lambda: builds.append(1) or original())
    return builds


def test_inference_cache_equals_uncached_output_and_is_reused(module, monkeypatch):
    builds = _cache_builds(module, monkeypatch)
    idx = random_idx(30, (4, 7))
    module.eval()
    uncached = module(idx)  # grad enabled: no cache
    assert builds == []
    with torch.no_grad():
        first = module(idx)
        second = module(idx[:, :3])
    assert builds == [1]
    torch.testing.assert_close(first, uncached.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(second, uncached[:, :3].detach(), rtol=1e-6, atol=1e-7)
    with torch.inference_mode():
        torch.testing.assert_close(module(idx), first)
    assert builds == [1]


def test_inference_cache_is_built_under_autocast(module):
    """Generation inside a bf16-autocast training run builds the cache there (a GPU test run
    found the 16-bit projection refused by the float32 cache)."""
    module.eval()
    idx = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        expected = module(idx)
        module._cache = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cached = module(idx)
    assert cached.dtype == torch.float32
    torch.testing.assert_close(cached, expected, rtol=1e-2, atol=1e-2)


def test_training_mode_never_uses_the_cache(module, monkeypatch):
    builds = _cache_builds(module, monkeypatch)
    with torch.no_grad():
        module(random_idx(30, (2, 2)))
    assert builds == []


@pytest.mark.parametrize(
    "change", ["optimizer_step", "fused_optimizer_step", "load_state_dict", "in_place", "to_double"]
)
def test_inference_cache_is_invalidated_when_parameters_change(module, change):
    idx = random_idx(30, (3, 5))
    other = CharEmbedding(module.table, 20, char_dim=6, hidden=10, backend="reference")
    module.eval()
    with torch.no_grad():
        before = module(idx)
    if change in ("optimizer_step", "fused_optimizer_step"):
        module.train()
        # The fused kernel updates parameters without bumping their version counters.
        optimizer = torch.optim.AdamW(module.parameters(), lr=0.1, fused=change == "fused_optimizer_step")
        module(idx).square().sum().backward()
        optimizer.step()
        module.eval()
    elif change == "load_state_dict":
        module.load_state_dict(other.state_dict())
    elif change == "in_place":
        with torch.no_grad():
            module.lstm.weight_hh_l0.mul_(2.0)
    else:
        module.double()
    with torch.no_grad():
        cached = module(idx)
    with torch.enable_grad():
        fresh = module(idx).detach()
    if change == "to_double":
        assert before.dtype == torch.float32 and cached.dtype == torch.float64
    else:
        assert not torch.allclose(cached, before)
    torch.testing.assert_close(cached, fresh, rtol=1e-6, atol=1e-7)


def test_inference_cache_can_be_turned_off(table, monkeypatch):
    module = CharEmbedding(table, 8, char_dim=4, hidden=5, backend="reference", inference_cache=False).eval()
    builds = _cache_builds(module, monkeypatch)
    with torch.no_grad():
        module(random_idx(30, (2, 2)))
    assert builds == []


# ---------------------------------------------------------------- backend selection
def test_unknown_backend_is_a_clear_error(table):
    with pytest.raises(RuntimeError, match="unknown backend 'nope'"):
        CharEmbedding(table, 8, backend="nope")(torch.tensor([1]))


def test_environment_variable_selects_the_backend(table, monkeypatch):
    monkeypatch.setenv("CHARFAST_BACKEND", "nope")
    with pytest.raises(RuntimeError, match="CHARFAST_BACKEND='nope'"):
        CharEmbedding(table, 8)(torch.tensor([1]))
    monkeypatch.setenv("CHARFAST_BACKEND", "reference")
    assert backends.resolve_backend("auto", torch.device("cpu")).name == "reference"


def test_explicit_unavailable_backend_raises_and_auto_falls_back(table, monkeypatch, caplog):
    never = backends.Backend("never", lambda *a: None, lambda device: "it needs hardware this test lacks")
    monkeypatch.setitem(backends._MODULES, "never", "unused")
    monkeypatch.setitem(backends._loaded, "never", never)
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ["never", "reference"])
    monkeypatch.setattr(backends, "_announced", set())
    monkeypatch.delenv("CHARFAST_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="backend='never' cannot run on cpu: it needs hardware"):
        CharEmbedding(table, 8, backend="never")(torch.tensor([1]))
    with caplog.at_level(logging.WARNING, logger="charfast"):
        chosen = backends.resolve_backend("auto", torch.device("cpu"))
        backends.resolve_backend("auto", torch.device("cpu"))
    assert chosen.name == "reference"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "'reference'" in notices[0] and "never: it needs hardware" in notices[0]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "idx, error, match",
    [
        (torch.tensor([1.0, 2.0]), TypeError, "integer token ids, got dtype torch.float32"),
        (torch.tensor([True, False]), TypeError, "integer token ids, got dtype torch.bool"),
        ([1, 2], TypeError, "must be a torch.Tensor"),
        (torch.tensor([[1, 30]]), ValueError, r"token id 30 is out of range \[0, 30\)"),
        (torch.tensor([[-1, 3]]), ValueError, r"token id -1 is out of range"),
        (torch.tensor([1], device="meta"), ValueError, "idx is on meta but the module's parameters are on cpu"),
    ],
)
def test_bad_idx_is_rejected(module, idx, error, match):
    with pytest.raises(error, match=match):
        module(idx)


def test_out_of_range_ids_are_rejected_on_the_cached_path_too(module):
    module.eval()
    with torch.no_grad(), pytest.raises(ValueError, match="token id 31 is out of range"):
        module(torch.tensor([31]))


def test_module_that_disagrees_with_its_table_is_rejected(module):
    module.char_emb = torch.nn.Embedding(5, 6)
    with pytest.raises(ValueError, match="char_emb has 5 rows but the table 'random' uses 12 chars"):
        module(torch.tensor([1]))


def test_lstm_of_the_wrong_kind_is_rejected(module):
    module.lstm = torch.nn.LSTM(6, 10, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match="one-layer"):
        module(torch.tensor([1]))


def test_mismatched_widths_are_rejected(module):
    module.proj = torch.nn.Linear(11, 20)
    with pytest.raises(ValueError, match="widths disagree"):
        module(torch.tensor([1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=0), "d_model must be a positive int"),
        (dict(d_model=8, hidden=2.5), "hidden must be a positive int"),
        (dict(d_model=8, char_dim=-1), "char_dim must be a positive int"),
    ],
)
def test_bad_constructor_arguments(table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CharEmbedding(table, **kwargs)


def test_table_must_be_a_token_char_table():
    with pytest.raises(TypeError, match="TokenCharTable"):
        CharEmbedding(torch.zeros(3, 3), 8)


def test_table_from_another_tokenizer_is_caught_by_range(cl100k_table):
    small = TokenCharTable(torch.zeros(10, 2, dtype=torch.long), torch.ones(10, dtype=torch.long), 256)
    module = CharEmbedding(small, 8, char_dim=4, hidden=4, backend="reference")
    with pytest.raises(ValueError, match=r"out of range \[0, 10\)"):
        module(torch.tensor([500]))


# ---------------------------------------------------------------- torch.compile
def _is_current(module):
    lstm = module.lstm
    expected = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    return all(a is b for a, b in zip(module._lstm_weights, expected, strict=True))


def test_weights_a_compiled_forward_reads_follow_every_change(module, table):
    assert _is_current(module) and module._backend.name == "reference"
    module.lstm = torch.nn.LSTM(6, 10, batch_first=True)
    assert _is_current(module)
    other = CharEmbedding(table, 20, char_dim=6, hidden=10, backend="reference")
    module.load_state_dict(other.state_dict(), assign=True)
    assert _is_current(module)
    # With this switch .to() makes new Parameter objects instead of changing them in place.
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        old = module.lstm.weight_hh_l0
        module.double()
        assert module.lstm.weight_hh_l0 is not old
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert _is_current(module)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_compiled_fullgraph_forward_and_backward_match_eager(table, device):
    torch._dynamo.reset()
    fused = CharEmbedding(table, 12, char_dim=5, hidden=7, backend="triton")
    ref = CharEmbedding(table, 12, char_dim=5, hidden=7, backend="reference")
    fused.lstm = torch.nn.LSTM(5, 7, batch_first=True)  # replaced before compiling: must be used
    ref.load_state_dict(fused.state_dict())
    fused.to(device), ref.to(device)
    idx = random_idx(30, (2, 6)).to(device)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    for m in (compiled, ref):
        m(idx).square().sum().backward()
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=pytest.mark.cpp)])
def test_forward_backward_is_bitwise_reproducible_on_cpu(backend):
    # Exact resume of training needs this: the same batch must give the same gradients.
    table = random_table(2000, 8, 40)
    module = CharEmbedding(table, 128, char_dim=16, hidden=32, backend=backend)
    idx = random_idx(2000, (16, 256))
    weight = torch.randn(16, 256, 128)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for _ in range(6):
            module.zero_grad(set_to_none=True)
            (module(idx) * weight).sum().backward()
            runs.append([p.grad.clone() for p in module.parameters()])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=pytest.mark.cpp)])
def test_whole_module_survives_torch_save_and_deepcopy(table, backend, tmp_path):
    import copy

    module = CharEmbedding(table, 20, char_dim=6, hidden=10, backend=backend)
    idx = random_idx(30, (2, 7))
    torch.save(module, tmp_path / "module.pt")
    for restored in (torch.load(tmp_path / "module.pt", weights_only=False), copy.deepcopy(module)):
        assert restored._backend.name == backend
        torch.testing.assert_close(restored(idx), module(idx), rtol=0, atol=0)

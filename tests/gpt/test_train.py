"""Training: data (split, token cache, sharded batches), the corpus BPE, checkpoints, the
CLI end to end, exact resume after Ctrl-C, and clear errors for bad settings.

Every run here is a tiny model on a tiny slice of the default corpus, on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charfast.gpt import train
from charfast.gpt.bpe import END_OF_TEXT, train_bpe
from charfast.gpt.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.data import TokenBatches, load_documents, split_documents, tokenize
from charfast.gpt.tokenizer import get_tokenizer

CHARS_PER_DOC = 12_000


# ------------------------------------------------------------------ shared helpers (also used by test_ddp.py)
def write_tiny_corpus(folder: Path, n_docs: int = 4) -> Path:
    """The first CHARS_PER_DOC chars of the first n_docs plays, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in shakespeare_documents()[:n_docs]:
        (folder / f"{name}.txt").write_text(text[:CHARS_PER_DOC], encoding="utf-8")
    return folder


def tiny_flags(corpus: Path, out_dir: Path, cache_dir: Path, **overrides) -> list[str]:
    """CLI flags of a run that takes a fraction of a second per step, on the default
    (auto) char backend, whose bitwise reproducibility the exact-resume test relies on."""
    values = dict(
        data=corpus,
        out_dir=out_dir,
        cache_dir=cache_dir,
        tokenizer="bpe:300",
        device="cpu",
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        char_dim=8,
        char_hidden=8,
        batch_size=4,
        max_steps=6,
        eval_interval=2,
        eval_iters=2,
        warmup_steps=2,
        sample_tokens=5,
    )
    values.update(overrides)
    flags = ["--no-progress"]
    for key, value in values.items():
        flag = f"--{key.replace('_', '-')}"
        flags += ([flag] if value else [f"--no-{flag[2:]}"]) if isinstance(value, bool) else [flag, str(value)]
    return flags


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


# ------------------------------------------------------------------ data
def test_documents_split_by_document(corpus):
    docs = load_documents(corpus)
    assert len(docs) == 4
    train_docs, val_docs = split_documents(docs, 0.25, seed=3)
    assert len(val_docs) == 1 and len(train_docs) == 3
    assert {n for n, _ in train_docs}.isdisjoint({n for n, _ in val_docs})
    assert split_documents(docs, 0.25, seed=3) == (train_docs, val_docs)
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents(docs[:1], 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(docs, 1.5)


def test_a_single_file_is_cut_into_documents(corpus):
    docs = load_documents(next(corpus.iterdir()))
    assert len(docs) > 10
    assert "".join(text for _, text in docs) == next(corpus.iterdir()).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="neither a text file nor a folder"):
        load_documents(corpus / "missing")


def test_token_cache_is_written_once(corpus, cache_dir):
    docs = load_documents(corpus)
    encoding = get_tokenizer("bpe:300", [t for _, t in docs], cache_dir=cache_dir)
    tokens = tokenize(encoding, docs, "all", cache_dir=cache_dir, show_progress=False)
    eot = encoding.encode_single_token(END_OF_TEXT)
    assert int((np.asarray(tokens) == eot).sum()) == len(docs)  # one separator after each document
    assert encoding.decode([t for t in tokens.tolist() if t != eot]) == "".join(t for _, t in docs)
    path = Path(tokens.filename)
    stamp = path.stat().st_mtime_ns
    again = tokenize(encoding, docs, "all", cache_dir=cache_dir, show_progress=False)
    assert Path(again.filename) == path and path.stat().st_mtime_ns == stamp


def test_batches_are_counter_based_and_sharded():
    tokens = np.arange(1000, dtype=np.uint16)
    whole = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    shards = [TokenBatches(tokens, block_size=8, batch_size=3, seed=5, rank=r, world_size=2) for r in range(2)]
    x, y = whole.batch(7)
    assert x.shape == (6, 8) and x.dtype == torch.int64
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    assert torch.equal(torch.cat([s.batch(7)[0] for s in shards]), x)  # the ranks split the global batch
    first = [whole.next()[0] for _ in range(3)]
    resumed = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    resumed.load_state_dict({"position": 2, "seed": 5})
    assert torch.equal(resumed.next()[0], first[2])
    with pytest.raises(ValueError, match="fewer than block_size"):
        TokenBatches(tokens[:8], block_size=8, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        resumed.load_state_dict({"position": 2, "seed": 6})


# ------------------------------------------------------------------ tokenizers
def test_bpe_matches_huggingface_and_round_trips(corpus, cache_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = [t for _, t in load_documents(corpus)]
    encoding = train_bpe(texts, 300, cache_dir=cache_dir)
    assert encoding.n_vocab == 301 and encoding.encode_single_token(END_OF_TEXT) == 300
    assert encoding.name.startswith("bpe300-")
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    sample = texts[1][:3000] + " Naïve café — ünïcode!"
    ours = [encoding.decode_single_token_bytes(t) for t in encoding.encode_ordinary(sample)]
    theirs = hf.encode(sample).tokens
    assert len(ours) == len(theirs)  # the same segmentation, token for token
    assert encoding.decode(encoding.encode_ordinary(sample)) == sample
    cached = train_bpe(texts, 300, cache_dir=cache_dir)
    assert cached.name == encoding.name and cached.encode_ordinary(sample) == encoding.encode_ordinary(sample)
    limited = train_bpe(texts, 300, max_token_length=3, cache_dir=cache_dir)
    assert max(len(limited.decode_single_token_bytes(i)) for i in range(300)) <= 3


@pytest.mark.parametrize(
    "name, message",
    [
        ("gpt9_base", "unknown tokenizer 'gpt9_base'"),
        ("bpe:lots", "expected 'bpe:VOCAB"),
        ("bpe:100", "vocab_size must be an int >= 257"),
    ],
)
def test_bad_tokenizer_names(name, message):
    with pytest.raises(ValueError, match=message):
        get_tokenizer(name, ["some text"])


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_is_atomic_and_validated(tmp_path):
    state = {
        "step": 1,
        "config": {"n_layer": 1},
        "tokenizer": {"name": "t", "n_vocab": 3},
        "model": {"w": torch.ones(2)},
        "optimizer": {},
        "scheduler": {},
        "data": {"position": 1},
        "rng": [torch.get_rng_state()],
    }
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    check_compatible(loaded, {"n_layer": 1}, {"name": "t", "n_vocab": 3})
    with pytest.raises(CheckpointError, match="n_layer: checkpoint 1 vs this run 2"):
        check_compatible(loaded, {"n_layer": 2}, {"name": "t", "n_vocab": 3})
    with pytest.raises(CheckpointError, match="tokenizer 't'"):
        check_compatible(loaded, {"n_layer": 1}, {"name": "u", "n_vocab": 3})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"format": "other", "model": {}}, path)
    with pytest.raises(CheckpointError, match="format 'other'"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------ the CLI
def test_cli_smoke_run(corpus, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(corpus, out, cache_dir)) == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train_loss"]) and r["tokens_per_s"] > 0 for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]
    for name in ("ckpt.pt", "loss.png", "sample.txt"):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "ckpt.pt", weights_only=True)  # plain tensors and values only
    assert state["step"] == 6 and state["config"]["arch"] == "char" and state["tokenizer"]["n_vocab"] == 301
    printed = capsys.readouterr().out
    assert "---- sample ----" in printed
    assert printed.strip().splitlines()[-1].startswith("wrote ") and str(out / "metrics.jsonl") in printed
    # The same command again must not overwrite the finished checkpoint.
    before = (out / "ckpt.pt").read_bytes()
    assert train.main(tiny_flags(corpus, out, cache_dir)) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert (out / "ckpt.pt").read_bytes() == before


@pytest.mark.gpu
def test_cli_run_and_resume_on_cuda(corpus, cache_dir, tmp_path):
    """On CUDA the default is torch.compile, bf16 autocast and the Triton backend."""
    out = tmp_path / "run"
    assert train.main(tiny_flags(corpus, out, cache_dir, device="cuda", max_steps=4, n_embd=32, char_hidden=32)) == 0
    assert (
        train.main(
            tiny_flags(corpus, out, cache_dir, device="cuda", max_steps=6, n_embd=32, char_hidden=32, resume=True)
        )
        == 0
    )
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 6


def test_grad_accumulation_draws_one_micro_batch_each(corpus, cache_dir, tmp_path):
    out = tmp_path / "run"
    assert train.main(tiny_flags(corpus, out, cache_dir, grad_accum=3, max_steps=2, sample_tokens=0)) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert torch.load(out / "ckpt.pt", weights_only=True)["data"]["position"] == 6


def test_help_lists_every_setting():
    result = subprocess.run(
        [sys.executable, "-m", "charfast.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for flag in (
        "--out-dir",
        "--max-steps",
        "--device",
        "--arch",
        "--resume",
        "--config",
        "--data",
        "--tokenizer",
        "--n-layer",
        "--lr",
        "--grad-accum",
        "--compile",
        "--preset",
    ):
        assert flag in result.stdout, flag


def test_config_file_and_flag_precedence(corpus, cache_dir, tmp_path):
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"n-embd": 24, "n_head": 3, "lr": 0.01}))
    config, asked = train.resolve_config(["--config", str(config_file), "--lr", "0.02"])
    assert (config.n_embd, config.n_head, config.lr) == (24, 3, 0.02)
    assert {"n_embd", "n_head", "lr"} <= asked and "n_layer" not in asked
    preset, _ = train.resolve_config(["--preset", "gpt2-small", "--max-steps", "10"])
    assert (preset.n_layer, preset.n_embd, preset.block_size, preset.max_steps) == (12, 768, 1024, 10)
    config_file.write_text(json.dumps({"n_embed": 24}))
    with pytest.raises(SystemExit, match=r"unknown setting\(s\) \['n_embed'\]"):
        train.resolve_config(["--config", str(config_file)])


def _interrupt_at(step: int):
    """A train_step that sends this process SIGINT (Ctrl-C) during step `step`."""
    original = train.Trainer.train_step

    def train_step(self):
        if self.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    return train_step


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(corpus, cache_dir, tmp_path, monkeypatch, capsys):
    # Dropout on: the resumed run must also restore the RNG to match.
    flags = dict(dropout=0.1, max_steps=6, eval_interval=2)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(tiny_flags(corpus, whole, cache_dir, **flags)) == 0

    with monkeypatch.context() as patch:
        patch.setattr(train.Trainer, "train_step", _interrupt_at(3))
        assert train.main(tiny_flags(corpus, split, cache_dir, **flags)) == 0
    assert "interrupted: saved step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3]
    assert not (split / "sample.txt").exists()
    assert train.main(tiny_flags(corpus, split, cache_dir, **flags, resume=True)) == 0

    expected, got = read_metrics(whole), read_metrics(split)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in expected]  # exact equality
    assert [r.get("val_loss") for r in got] == [r.get("val_loss") for r in expected]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_conflicting_or_broken_checkpoints(corpus, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(corpus, out, cache_dir, max_steps=2, sample_tokens=0)) == 0
    assert train.main(tiny_flags(corpus, out, cache_dir, max_steps=3, n_embd=32, resume=True)) == 2
    assert "--n-embd 32 (checkpoint: 16)" in capsys.readouterr().err
    # The checkpoint remembers the tokenizer: a different corpus means a different BPE.
    other = write_tiny_corpus(tmp_path / "other", n_docs=3)
    config, asked = train.resolve_config(tiny_flags(other, out, cache_dir, max_steps=3, resume=True))
    asked.discard("data")  # as if the checkpoint's data path now held other text
    state = load_checkpoint(out / "ckpt.pt")
    state["config"]["data"] = str(other)
    save_checkpoint(out / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match="was trained with tokenizer"):
        train.Trainer(config, asked)
    (out / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert train.main(tiny_flags(corpus, out, cache_dir, max_steps=3, resume=True)) == 2
    assert "is corrupt or not a charfast checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=18, n_head=4), "n_embd (18) must be divisible by n_head (4)"),
        (dict(tokenizer="nope_base"), "unknown tokenizer 'nope_base'"),
        (dict(arch="bytes"), "arch must be one of"),
        (dict(block_size=100_000), "fewer than block_size + 1 = 100001"),
        (dict(max_steps=0), "--max-steps must be >= 1"),
    ],
)
def test_bad_settings_get_clear_messages(corpus, cache_dir, tmp_path, capsys, overrides, message):
    assert train.main(tiny_flags(corpus, tmp_path / "run", cache_dir, **overrides)) == 2
    assert message in capsys.readouterr().err

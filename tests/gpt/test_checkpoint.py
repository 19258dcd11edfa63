"""Checkpoints: atomic writes, weights_only loads and clear errors for bad files."""

import pytest
import torch

from charfast.gpt.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from charfast.gpt.seeding import rng_state


def _state() -> dict:
    """A checkpoint's state as a training run writes it, for a one-layer model."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return {
        "step": 1,
        "config": {"n_layer": 1},
        "tokenizer": {"name": "t", "n_vocab": 3},
        "model": {"w": torch.ones(2)},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data": {"position": 1, "seed": 3},
        "rng": [rng_state()],
    }


def test_checkpoint_is_atomic_and_validated(tmp_path):
    state = _state()
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


BROKEN = {
    "step None": ("step", None),
    "step negative": ("step", -1),
    "config None": ("config", None),
    "tokenizer None": ("tokenizer", None),
    "tokenizer without n_vocab": ("tokenizer", {"name": "t"}),
    "model None": ("model", None),
    "model of lists": ("model", {"w": [1.0]}),
    "optimizer None": ("optimizer", None),
    "optimizer empty": ("optimizer", {}),
    "scheduler None": ("scheduler", None),
    "data None": ("data", None),
    "data without position": ("data", {"seed": 3}),
    "rng None": ("rng", None),
    "rng empty": ("rng", []),
    "rng of tensors": ("rng", [torch.get_rng_state()]),
}


@pytest.mark.parametrize("entry, value", BROKEN.values(), ids=BROKEN.keys())
def test_every_entry_is_checked_on_loading(tmp_path, entry, value):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {**_state(), entry: value})
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: its '{entry}' entry must be"):
        load_checkpoint(path)


def test_a_checkpoint_verifies_its_content_on_loading(tmp_path):
    """A flipped bit in a tensor loads as a valid zip and pickle: the digest written with
    the checkpoint is what catches it."""
    path = tmp_path / "ckpt.pt"
    state = _state()
    state["model"] = {"w": torch.arange(4096, dtype=torch.float32)}
    save_checkpoint(path, state)
    assert torch.equal(load_checkpoint(path)["model"]["w"], state["model"]["w"])
    data = bytearray(path.read_bytes())
    at = data.index(torch.tensor(1234.0).numpy().tobytes())  # inside the weights' storage
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # torch itself reads it without a word
    with pytest.raises(CheckpointError, match=r"ckpt.pt is damaged: its content does not match the digest"):
        load_checkpoint(path)


def test_the_corpus_is_compared_by_content_not_by_path(tmp_path):
    state = {**_state(), "config": {"n_layer": 1, "data": "/old/mount/corpus"}, "corpus_sha256": "a" * 64}
    tokenizer = {"name": "t", "n_vocab": 3}
    check_compatible(state, {"n_layer": 1, "data": "corpus"}, tokenizer, corpus_sha256="a" * 64)  # moved: fine
    with pytest.raises(CheckpointError, match="trained on another corpus than --data corpus holds now"):
        check_compatible(state, {"n_layer": 1, "data": "corpus"}, tokenizer, corpus_sha256="b" * 64)
    older = {k: v for k, v in state.items() if k != "corpus_sha256"}  # before checkpoints knew their corpus
    with pytest.raises(CheckpointError, match="data: checkpoint '/old/mount/corpus' vs this run 'corpus'"):
        check_compatible(older, {"n_layer": 1, "data": "corpus"}, tokenizer, corpus_sha256="a" * 64)


def test_resume_refuses_other_text_under_the_same_path_and_takes_the_same_text_elsewhere(
    tiny_corpus, tiny_cache, tmp_path, capsys
):
    import shutil

    from tiny_runs import tiny_flags

    from charfast.gpt import train

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    out = tmp_path / "run"
    assert train.main(tiny_flags(corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    moved = tmp_path / "moved"
    corpus.rename(moved)
    assert train.main([*tiny_flags(moved, out, tiny_cache, max_steps=3, sample_tokens=0), "--resume"]) == 0
    first = sorted(moved.iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    capsys.readouterr()
    assert train.main([*tiny_flags(moved, out, tiny_cache, max_steps=4, sample_tokens=0), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was trained on another corpus than --data" in err and len(err.strip().splitlines()) == 1, err


def test_run_info_summarises_the_checkpoint_for_readers_without_tensors(tmp_path):
    from charfast.gpt.checkpoint import RUN_INFO_NAME, read_run_info

    state = {**_state(), "corpus_sha256": "c" * 64}
    save_checkpoint(tmp_path / "ckpt.pt", state, run_info=tmp_path / RUN_INFO_NAME)
    info = read_run_info(tmp_path / RUN_INFO_NAME)
    assert {k: info[k] for k in ("step", "config", "tokenizer", "corpus_sha256", "checkpoint")} == {
        "step": 1, "config": {"n_layer": 1}, "tokenizer": {"name": "t", "n_vocab": 3},
        "corpus_sha256": "c" * 64, "checkpoint": "ckpt.pt",
    }  # fmt: skip
    assert info["content_sha256"] == torch.load(tmp_path / "ckpt.pt", weights_only=True)["content_sha256"]
    assert read_run_info(tmp_path / "missing.json") is None
    (tmp_path / "other.json").write_text('{"format": "another"}')
    assert read_run_info(tmp_path / "other.json") is None

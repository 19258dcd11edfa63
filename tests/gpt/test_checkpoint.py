"""Checkpoints: atomic writes, weights_only loads and clear errors for bad files."""

import pytest
import torch

from charfast.gpt.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint


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

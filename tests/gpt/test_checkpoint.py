"""Checkpoints: atomic writes, weights_only loads and clear errors for bad files."""

import pytest
import torch

from charfast.gpt.checkpoint import CheckpointError, check_compatible, load_checkpoint, rng_state, save_checkpoint


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

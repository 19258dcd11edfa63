"""Run settings: every flag in --help, the precedence defaults < preset < --config < flags
< checkpoint, and the resume policy."""

import dataclasses
import json
import subprocess
import sys

import pytest
from tiny_runs import tiny_flags

from charfast.gpt import train
from charfast.gpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from charfast.gpt.config import resolve_config


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


def test_precedence_defaults_preset_config_file_flags(tmp_path):
    out = ["--out-dir", str(tmp_path / "run")]
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"n-embd": 24, "n_head": 3, "lr": 0.01, "max_steps": 7}))
    config = resolve_config([*out, "--preset", "gpt2-small", "--config", str(config_file), "--lr", "0.02"]).config
    assert config.n_layer == 12  # the preset over the default 4
    assert (config.n_embd, config.n_head, config.max_steps) == (24, 3, 7)  # the file over the preset
    assert config.lr == 0.02  # the flag over the file
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # resolved once, never changed afterwards
    config_file.write_text(json.dumps({"n_embed": 24}))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['n_embed'\]"):
        resolve_config([*out, "--config", str(config_file)])


def test_resume_takes_the_checkpoints_settings_and_refuses_conflicts(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    with pytest.raises(ValueError, match="pass --resume to continue it"):
        resolve_config(tiny_flags(tiny_corpus, out, tiny_cache))  # a fresh run never overwrites
    # The checkpoint decides what is computed; flags decide how the run is steered.
    run = resolve_config(["--out-dir", str(out), "--resume", "--max-steps", "5", "--lr", "0.002"])
    assert (run.config.n_embd, run.config.tokenizer, run.config.max_steps) == (16, "bpe:300", 5)
    assert run.checkpoint["step"] == 2 and run.checkpoint_path == out / "ckpt.pt"
    with pytest.raises(CheckpointError, match=r"--n-embd 32 \(checkpoint: 16\)"):
        resolve_config(tiny_flags(tiny_corpus, out, tiny_cache, n_embd=32, resume=True))
    state = load_checkpoint(out / "ckpt.pt")
    state["config"]["future_setting"] = 1
    save_checkpoint(out / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match=r"does not know: \['future_setting'\]"):
        resolve_config(["--out-dir", str(out), "--resume"])

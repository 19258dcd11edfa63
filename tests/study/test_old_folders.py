"""Study folders and checkpoints written by earlier code keep being reused and loaded: the
pretraining settings each preset records are those the code of 2026-12-06 recorded, and a
study folder that code wrote (fixtures/quick_study_fbe2f57.tar.gz: the quick preset,
bpe:300, char, seed 0, count alone) is reused stage by stage, nothing trained again."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from charfast.gpt.run import load_run
from charfast.study import stage_finetune, stage_pretrain, stage_probe
from charfast.study.config import StudyConfig
from charfast.study.pipeline import Study
from charfast.study.presets import PRESETS

FIXTURES = Path(__file__).parent / "fixtures"


RECORDED = json.loads((FIXTURES / "pretrain_built_from.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("preset", sorted(RECORDED))
def test_each_presets_pretraining_settings_are_those_older_records_hold(preset):
    """The settings a pretraining's records are built from (fixtures/pretrain_built_from.json:
    written by the code of 2026-12-06, which built them from charfast.train flags, for every
    preset it had)."""
    recorded = RECORDED[preset]
    study = Study(StudyConfig(preset=preset, out_dir="unused", device="cpu"))
    config = stage_pretrain.pretraining_config(study, PRESETS[preset].tokenizers[0], "char", 0)
    assert stage_pretrain.portable_settings(study, config) == recorded


def test_a_study_folder_written_by_older_code_is_reused_and_its_checkpoints_load(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    with tarfile.open(FIXTURES / "quick_study_fbe2f57.tar.gz") as tar:
        tar.extractall(tmp_path / "study", filter="data")
    for module, name in ((stage_pretrain, "run_training"), (stage_probe, "probe_model"), (stage_finetune, "finetune")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} ran again"))
    config = StudyConfig(
        out_dir=str(tmp_path / "study"),
        preset="quick",
        tokenizers=("bpe:300",),
        seeds=(0,),
        archs=("char",),
        tasks=("count",),
        solo_tasks=(),
        device="cpu",
    )
    study = Study(config)
    kinds = set()
    for stage in study.stages():
        step = stage.key[3] if stage.kind in ("probe", "finetune") else None
        if step is None or step == PRESETS["quick"].pretrain_steps:  # the fixture holds the last step's stages
            study.run_stage(stage)
            kinds.add(stage.kind)
    assert kinds == {"pretrain", "splits", "probe", "finetune"}
    pretrain = tmp_path / "study" / "bpe_300" / "char-seed0" / "pretrain"
    for ckpt, step in ((pretrain / "ckpt.pt", 20), (pretrain / "kept" / "step5.pt", 5)):
        run = load_run(pretrain, ckpt=ckpt, device="cpu")
        assert run.step == step and run.config.arch == "char"
        logits, _ = run.model(torch.zeros(1, 4, dtype=torch.long))
        assert logits.shape[-1] == run.encoding.n_vocab and torch.isfinite(logits).all()

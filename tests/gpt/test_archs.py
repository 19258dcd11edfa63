"""The arch registry: a new arch is one entry, and the model, the settings' checks, the
memory estimate and the study's comparisons, report and plots all follow it; an arch a
consumer does not know is an error, never a dropped row."""

from __future__ import annotations

import pytest
import torch

from charfast import TokenCharTable
from charfast.gpt import archs
from charfast.gpt.config import TrainConfig, validate_config
from charfast.gpt.memory_need import least_training_needs
from charfast.gpt.model import GPT, GPTConfig
from charfast.study import analysis, plots
from charfast.study import config as study_config
from charfast.study import report as report_module

TOY = archs.Arch(
    "char-reseeded",
    "control",
    encoder="lstm",
    table_view=lambda table: table.shuffled(7),
    compares="real spelling against another fixed permutation of the chars",
    colour="tab:red",
)


@pytest.fixture
def toy_arch(monkeypatch):
    monkeypatch.setitem(archs.REGISTRY, TOY.name, TOY)
    return TOY.name


def _table(vocab: int = 64) -> TokenCharTable:
    g = torch.Generator().manual_seed(0)
    return TokenCharTable(
        torch.randint(0, 256, (vocab, 6), generator=g), torch.randint(1, 7, (vocab,), generator=g), 256
    )


def _result(arch: str, seed: int, correct: list[float]) -> dict:
    after = [{"task": "spell", "split": "heldout", "correct": c, "answer_loss": 1.0} for c in correct]
    curve = [{"step": 0, "exact_match": {"spell|heldout": 0.0}}]
    return dict(tokenizer="bpe:300", arch=arch, seed=seed, finetuning="mixed", n_vocab=64, after=after,
                learning_curve=curve, built_from={"pretrain_step": 10})  # fmt: skip


def test_a_registered_arch_is_built_checked_and_sized_like_the_others(toy_arch):
    table = _table()
    config = GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16, char_dim=8, char_hidden=8)
    model = GPT(GPTConfig(**{**vars(config), "arch": toy_arch}), char_table=table)
    assert torch.equal(model.char_emb.table.chars, table.shuffled(7).chars)  # its view of the table
    char = GPT(GPTConfig(**{**vars(config), "arch": "char"}), char_table=table)
    assert model.num_parameters() == char.num_parameters()
    train_config = TrainConfig(arch=toy_arch, n_layer=1, n_head=2, n_embd=16, char_dim=8, char_hidden=8, device="cpu")
    validate_config(train_config)  # the settings' checks know it
    as_char = least_training_needs(
        TrainConfig(arch="char", n_layer=1, n_head=2, n_embd=16, char_dim=8, char_hidden=8), 64
    )
    assert least_training_needs(train_config, 64) == as_char  # its encoder counted in the memory estimate
    study = study_config.StudyConfig(preset="quick", archs=("char", toy_arch), device="cpu").resolved()
    study.validate()


def test_the_study_compares_the_treatment_with_a_registered_control(toy_arch):
    results = [_result(arch, seed, [1.0, 0.0, 1.0]) for arch in ("char", toy_arch) for seed in (0, 1)]
    (row,) = analysis.task_rows(results)
    assert set(row["exact_match"]) == {"char", toy_arch} and toy_arch in row["difference"]
    table = report_module.task_table([row])
    assert f"| char | {toy_arch} |" in table and f"| char - {toy_arch} |" in table  # its column and its difference
    not_made = analysis.comparisons_not_made(results)
    assert any("baseline-matched" in line for line in not_made) and not any(toy_arch in line for line in not_made)
    assert plots._colour(toy_arch) == "tab:red"


def test_an_arch_nobody_registered_is_an_error_not_a_dropped_row():
    results = [_result(arch, 0, [1.0]) for arch in ("char", "char-from-another-version")]
    with pytest.raises(ValueError, match="a record's arch must be one of .*got 'char-from-another-version'"):
        analysis.task_rows(results)
    with pytest.raises(ValueError, match="arch must be one of"):
        GPTConfig(vocab_size=8, arch="char-from-another-version")
    with pytest.raises(ValueError, match="--archs must name some of"):
        study_config.StudyConfig(
            preset="quick", archs=("char-from-another-version",), device="cpu"
        ).resolved().validate()


def test_an_arch_entry_says_what_it_needs():
    with pytest.raises(ValueError, match="registered already"):
        archs.register(archs.Arch("char", "treatment", encoder="lstm", table_view=lambda t: t))
    with pytest.raises(ValueError, match="an encoder and its table_view go together"):
        archs.Arch("half", "control", encoder="lstm", compares="x")
    with pytest.raises(ValueError, match="says what the treatment minus it measures"):
        archs.Arch("mute", "control")
    with pytest.raises(ValueError, match="encoder must be one of"):
        archs.Arch("gru", "control", encoder="gru", table_view=lambda t: t, compares="x")
    with pytest.raises(ValueError, match="budget must be > 0 .1 for the char-LSTM."):
        archs.Arch("big", "control", encoder="lstm", table_view=lambda t: t, budget=2.0, compares="x")


@pytest.mark.parametrize("arch", archs.alternatives())
def test_each_alternative_encoder_trains_resumes_and_loads_at_its_budget(arch, tiny_corpus, tiny_cache, tmp_path):
    from tiny_runs import tiny_flags

    from charfast.encoders import MATCH_TOLERANCE
    from charfast.gpt import train
    from charfast.gpt.model import char_encoder_parameter_count
    from charfast.gpt.run import load_run

    out = tmp_path / "run"
    sizes = dict(n_embd=32, char_dim=64, char_hidden=64)  # a budget that buys every encoder a few widths
    flags = tiny_flags(tiny_corpus, out, tiny_cache, arch=arch, max_steps=2, eval_interval=2, sample_tokens=4, **sizes)
    assert train.main(flags) == 0
    assert train.main([*flags, "--resume", "--max-steps", "3"]) == 0
    run = load_run(out)
    part = run.model.char_emb if run.model.char_emb is not None else run.model.matched_emb
    budget = archs.get(arch).budget * char_encoder_parameter_count(run.model.config, 256)
    tolerance = MATCH_TOLERANCE if run.model.char_emb is not None else 0.5  # an id embedding's width is coarser
    assert abs(sum(p.numel() for p in part.parameters()) - budget) <= tolerance * budget
    assert run.step == 3 and run.model.char_emb is None or run.model.char_emb.encoder_name == archs.get(arch).encoder

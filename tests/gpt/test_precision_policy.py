"""The GPT's precision policy (bf16 autocast on CUDA, where FlashAttention refuses float32)
is entered by the model itself, so no caller can forget it. A CPU run proves it: the policy
is replaced by one that records whether it is in force, and every attention call of
training, evaluation, sampling and the study's fine-tuning, scoring and probes is counted
inside or outside it."""

from __future__ import annotations

import contextlib
import random

import pytest
from tiny_runs import tiny_flags

from charfast.gpt import model as model_module
from charfast.gpt import sample, train
from charfast.gpt.run import load_run
from charfast.study.evaluate import evaluate_examples
from charfast.study.finetune import FinetuneConfig, finetune
from charfast.study.probe import probe_model
from charfast.study.tasks import draw_examples

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel"]


@pytest.fixture
def attention_calls(monkeypatch):
    """{"inside": n, "outside": n}: attention calls inside and outside the precision policy."""
    calls = {"inside": 0, "outside": 0}
    depth = []

    @contextlib.contextmanager
    def recording_policy(device):
        depth.append(device)
        try:
            yield
        finally:
            depth.pop()

    monkeypatch.setattr(model_module, "mixed_precision", recording_policy)
    attend = model_module.CausalSelfAttention.forward

    def counted(self, *args, **kwargs):
        calls["inside" if depth else "outside"] += 1
        return attend(self, *args, **kwargs)

    monkeypatch.setattr(model_module.CausalSelfAttention, "forward", counted)
    return calls


def test_every_forward_of_train_sample_and_the_study_runs_under_the_policy(
    tiny_corpus, tiny_cache, tmp_path, attention_calls
):
    out = tmp_path / "run"
    assert (
        train.main(
            tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, eval_interval=1, sample_tokens=3, block_size=64)
        )
        == 0
    )
    assert attention_calls["outside"] == 0 and attention_calls["inside"] > 0  # steps, evals, the run's sample
    before = attention_calls["inside"]
    assert sample.main(["--ckpt", str(out / "ckpt.pt"), "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert attention_calls["outside"] == 0 and attention_calls["inside"] > before

    run = load_run(out, device="cpu")
    model, encoding = run.model, run.encoding
    before = attention_calls["inside"]
    finetune(model, encoding, WORDS, FinetuneConfig(tasks=("spell",), steps=2, batch_size=2), device="cpu")
    questions = [("train", e) for e in draw_examples("spell", WORDS, 2, random.Random(0))]
    evaluate_examples(model, encoding, questions, device="cpu")
    probe_model(model, encoding)
    assert attention_calls["outside"] == 0 and attention_calls["inside"] > before

"""The training CLI end to end: a run's files, gradient accumulation, exact resume after
Ctrl-C, refused resumes and clear errors for bad settings.

Every run here is a tiny model on a tiny slice of the default corpus, on CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch
from tiny_runs import read_metrics, tiny_flags, write_tiny_corpus

from charfast import TokenCharTable
from charfast.gpt import run as run_module
from charfast.gpt import run_data, train
from charfast.gpt.checkpoint import RUN_INFO_NAME, CheckpointError, load_checkpoint, read_run_info, save_checkpoint
from charfast.gpt.trainer import Trainer


def test_cli_smoke_run(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache)) == 0
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
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache)) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert (out / "ckpt.pt").read_bytes() == before


@pytest.mark.gpu
def test_cli_run_and_resume_on_cuda(tiny_corpus, tiny_cache, tmp_path):
    """On CUDA the default is torch.compile, bf16 autocast and the Triton backend."""
    out = tmp_path / "run"
    assert (
        train.main(tiny_flags(tiny_corpus, out, tiny_cache, device="cuda", max_steps=4, n_embd=32, char_hidden=32)) == 0
    )
    assert (
        train.main(
            tiny_flags(tiny_corpus, out, tiny_cache, device="cuda", max_steps=6, n_embd=32, char_hidden=32, resume=True)
        )
        == 0
    )
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 6


def test_grad_accumulation_draws_one_micro_batch_each(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, grad_accum=3, max_steps=2, sample_tokens=0)) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert torch.load(out / "ckpt.pt", weights_only=True)["data"]["position"] == 6


def test_the_char_embedding_once_per_step_changes_no_result(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    """50 steps of 4 micro-batches, float32: the char-LSTM once per step (what charfast.train
    does) and once per micro-batch reach the same loss to 4 decimals."""
    flags = dict(max_steps=50, eval_interval=25, grad_accum=4, sample_tokens=0)
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "once", tiny_cache, **flags)) == 0
    monkeypatch.setattr(Trainer, "_char_once_per_step", lambda self, inputs: contextlib.nullcontext())
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "each", tiny_cache, **flags)) == 0
    once, each = read_metrics(tmp_path / "once"), read_metrics(tmp_path / "each")
    assert once[-1]["step"] == each[-1]["step"] == 50
    assert abs(once[-1]["train_loss"] - each[-1]["train_loss"]) < 5e-5
    assert abs(once[-1]["val_loss"] - each[-1]["val_loss"]) < 5e-5
    assert once[-1]["train_loss"] < once[0]["train_loss"] - 0.5  # it learned: the comparison means something


def _interrupt_at(step: int):
    """A train_step that sends this process SIGINT (Ctrl-C) during step `step`."""
    original = Trainer.train_step

    def train_step(self, stop=None):
        if self.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, stop)

    return train_step


@pytest.mark.parametrize("grad_accum", [1, 3], ids=["one-micro-batch", "char-once-per-step"])
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, grad_accum
):
    # Dropout on: the resumed run must also restore the RNG to match.
    flags = dict(dropout=0.1, max_steps=6, eval_interval=2, grad_accum=grad_accum)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(tiny_flags(tiny_corpus, whole, tiny_cache, **flags)) == 0

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", _interrupt_at(3))
        assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags)) == 130  # 128 + SIGINT: not finished
    assert "interrupted by SIGINT: saved step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3]
    assert not (split / "sample.txt").exists()
    assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags, resume=True)) == 0

    expected, got = read_metrics(whole), read_metrics(split)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in expected]  # exact equality
    assert [r.get("val_loss") for r in got] == [r.get("val_loss") for r in expected]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_conflicting_or_broken_checkpoints(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, n_embd=32, resume=True)) == 2
    assert "--n-embd 32 (checkpoint: 16)" in capsys.readouterr().err
    # The checkpoint remembers the tokenizer: a different corpus means a different BPE.
    other = write_tiny_corpus(tmp_path / "other", n_docs=3)
    state = load_checkpoint(out / "ckpt.pt")
    state["config"]["data"] = str(other)  # as if the checkpoint's data path now held other text
    save_checkpoint(out / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    assert train.main(["--out-dir", str(out), "--resume", "--max-steps", "3", "--no-progress"]) == 2
    assert "was trained on another corpus than --data" in capsys.readouterr().err  # its content digest
    # A checkpoint written before they recorded their corpus: the tokenizer still tells.
    older = {k: v for k, v in state.items() if k not in ("format", "corpus_sha256")}
    save_checkpoint(out / "ckpt.pt", older)
    assert train.main(["--out-dir", str(out), "--resume", "--max-steps", "3", "--no-progress"]) == 2
    assert "was trained with tokenizer" in capsys.readouterr().err
    (out / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, resume=True)) == 2
    assert "is corrupt or not a charfast checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["rng", "scheduler", "optimizer", "data"])
def test_resume_names_a_broken_checkpoint_entry(tiny_corpus, tiny_cache, tmp_path, capsys, entry):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    state = load_checkpoint(out / "ckpt.pt")
    save_checkpoint(out / "ckpt.pt", {k: v for k, v in state.items() if k != "format"} | {entry: None})
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, resume=True)) == 2
    err = capsys.readouterr().err
    assert f"its '{entry}' entry must be" in err and len(err.strip().splitlines()) == 1, err


def test_load_run_gives_the_trained_model_without_an_optimizer(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    saved = torch.load(out / "ckpt.pt", weights_only=True)
    reads = []
    real_load = run_module.load_checkpoint
    monkeypatch.setattr(run_module, "load_checkpoint", lambda path: reads.append(path) or real_load(path))
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: pytest.fail("load_run built an optimizer"))
    loaded = run_module.load_run(out, device="cpu")
    assert reads == [out / "ckpt.pt"]  # one read of the checkpoint
    assert loaded.step == 2 and loaded.encoding.name == saved["tokenizer"]["name"] and not loaded.model.training
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in saved["model"].items())
    assert loaded.config.n_embd == saved["config"]["n_embd"] and loaded.device == torch.device("cpu")
    info = read_run_info(out / RUN_INFO_NAME)  # beside the checkpoint, for readers that need no tensors
    assert (info["step"], info["config"], info["tokenizer"]) == (2, saved["config"], saved["tokenizer"])
    assert info["content_sha256"] == saved["content_sha256"]
    # The same corpus where another machine mounts it; other text there is refused.
    moved = tmp_path / "moved"
    shutil.copytree(tiny_corpus, moved)
    assert run_module.load_run(out, device="cpu", data=str(moved)).config.data == str(moved)
    first = sorted(moved.iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    with pytest.raises(CheckpointError, match="was trained on another corpus"):
        run_module.load_run(out, device="cpu", data=str(moved))


# Each user mistake: one line naming the flag, exit 2, no traceback, and (but for the one
# that depends on the data) before any data is read.
BAD_SETTINGS = [
    (dict(n_embd=18, n_head=4), "--n-embd (18) must be divisible by n_head (4)"),
    (dict(n_layer=0), "--n-layer must be a positive int, got 0"),
    (dict(tokenizer="nope_base"), "--tokenizer: unknown tokenizer 'nope_base'"),
    (dict(tokenizer="bpe:100"), "--tokenizer bpe:100: VOCAB must lie in [257, 16777216]"),
    (dict(tokenizer="bpe:1000000000000"), "--tokenizer bpe:1000000000000: VOCAB must lie in [257, 16777216]"),
    (dict(sample_tokens=10**12), "--sample-tokens must be at most 1,000,000, got 1000000000000"),
    (dict(tokenizer="bpe:x"), "expected 'bpe:VOCAB' or 'bpe:VOCAB:MAXLEN'"),
    (dict(arch="bytes"), "--arch must be one of"),
    (dict(max_steps=0), "--max-steps must be >= 1"),
    (dict(lr="inf"), "--lr must be a finite number, got inf"),
    (dict(lr="nan"), "--lr must be a finite number, got nan"),
    (dict(min_lr=1.0), "--min-lr in [0, lr]"),
    (dict(lr_decay_steps=0), "--lr-decay-steps must be >= 1"),
    (dict(beta2=1.5), "--beta2 must lie in [0, 1)"),
    (dict(val_fraction=0), "--val-fraction must lie in (0, 1)"),
    (dict(temperature=-1), "--temperature must be >= 0, got -1.0"),
    (dict(top_k=0), "--top-k must be >= 1 (or none), got 0"),
    (dict(seed=-1), "--seed must lie in [0, 2**62), got -1"),
    (dict(char_backend="bogus"), "--char-backend must be one of auto, reference, cpp, triton, got 'bogus'"),
    (dict(device="bogus"), "--device: expected auto, cpu, cuda or cuda:N, got 'bogus'"),
    (dict(compile="sometimes"), "--compile must be auto, on or off"),
    (dict(data="/nonexistent/corpus"), "--data: /nonexistent/corpus does not exist"),
    (dict(sample_prompt="\udcff"), "--sample-prompt: character 0 is not valid text"),
    (dict(out_dir_flag=""), "--out-dir must name a folder, got ''"),
    (dict(out_dir_flag="  "), "--out-dir must name a folder, got '  '"),
    (dict(attention="flash-attn"), "--attention flash-attn cannot run here: the flash-attn package runs on CUDA only"),
]
CONFIG_FILE_MISTAKES = [
    ({"resume": "false"}, 'resume must be true or false, got "false"'),
    ({"bias": "false"}, 'bias must be true or false, got "false"'),
    ({"max_steps": "abc"}, 'max_steps must be an integer, got "abc"'),
    ({"max_steps": 2.5}, "max_steps must be an integer, got 2.5"),
    ({"lr": None}, "lr must be a number, got null"),
    ({"data": 5}, "data must be a string or null, got 5"),
    ({"top_k": True}, "top_k must be an integer or null, got true"),
    ({"n_embed": 24}, "unknown setting(s) ['n_embed']"),
    ([1, 2], "must hold a JSON object of settings"),
    ("{not json", "cannot read"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=lambda v: str(v)[:40])
def test_a_bad_setting_is_one_line_before_any_data_is_read(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, overrides, message
):
    monkeypatch.setattr(
        run_data, "index_corpus", lambda *a, **k: pytest.fail("data was read before the settings were checked")
    )
    monkeypatch.chdir(tmp_path)  # an empty --out-dir must not mean the current folder
    overrides = dict(overrides)
    out_dir = overrides.pop("out_dir_flag", tmp_path / "run")
    assert train.main(tiny_flags(tiny_corpus, out_dir, tiny_cache, **overrides)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused run wrote something"
    err = capsys.readouterr().err
    assert err.startswith("charfast.train: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


HUGE = 10**12
TOO_LARGE_FOR_MEMORY = [
    # On the CPU the loss holds its logits a chunk at a time: the residual streams outgrow them.
    (dict(batch_size=HUGE), "one micro-batch's residual streams (--batch-size 1000000000000 --block-size 16"),
    (dict(grad_accum=HUGE), "the step's token batches (--grad-accum 1000000000000"),
    (dict(block_size=HUGE), "the model's weights, gradients and AdamW state (--n-layer 1 --n-embd 16 --block-size"),
    (dict(n_layer=HUGE), "the model's weights, gradients and AdamW state (--n-layer 1000000000000"),
    (dict(n_embd=HUGE, n_head=1), "the model's weights, gradients and AdamW state (--n-layer 1 --n-embd 1000000000000"),
    (dict(char_hidden=HUGE), "--char-hidden 1000000000000"),
    (dict(char_dim=HUGE), "--char-dim 1000000000000"),
    (dict(eval_iters=HUGE), "one loss per eval batch (--eval-iters 1000000000000)"),
]


@pytest.mark.parametrize("overrides, message", TOO_LARGE_FOR_MEMORY, ids=lambda v: str(v)[:40])
def test_sizes_beyond_the_memory_are_one_line_and_exit_1(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, overrides, message
):
    monkeypatch.setattr(
        run_data, "index_corpus", lambda *a, **k: pytest.fail("data was read before the memory was checked")
    )
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache, **overrides)) == 1
    err = capsys.readouterr().err
    assert err.startswith("charfast.train: error: not enough memory on cpu: the run needs at least ") and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_memory_bound_is_a_lower_bound_of_the_model_it_counts():
    from charfast.gpt.config import TrainConfig, model_config
    from charfast.gpt.memory_need import least_training_needs
    from charfast.gpt.model import GPT

    for arch, tie in [("char", True), ("baseline", False)]:
        config = TrainConfig(arch=arch, tie_weights=tie, n_layer=2, n_embd=32, n_head=2, char_dim=8, char_hidden=16)
        table = TokenCharTable(torch.zeros(300, 4, dtype=torch.long), torch.ones(300, dtype=torch.long), 256)
        model = GPT(model_config(config, 300), char_table=None if arch == "baseline" else table)
        state_bytes = least_training_needs(config, 300)[0].bytes
        assert 0.9 * 16 * model.num_parameters() <= state_bytes <= 16 * model.num_parameters()


def test_the_memory_bound_under_fsdp_counts_what_a_rank_holds(monkeypatch):
    """A 1.48B-parameter run on 8 ranks of 16 GiB: whole, its weights, gradients and AdamW
    state are 22 GiB a rank (refused under DDP); sharded, 2.8 GiB (it fits)."""
    import dataclasses

    from charfast.gpt import memory_need
    from charfast.gpt.config import TrainConfig

    config = TrainConfig(
        arch="baseline", n_layer=48, n_embd=1600, n_head=25, block_size=1024, batch_size=1, tokenizer="gpt2"
    )
    whole = memory_need.least_training_needs(config, 50_257)[0].bytes
    assert 1.4e9 < whole / 16 < 1.6e9 and whole > 16 * 2**30
    sharded = dataclasses.replace(config, parallel="fsdp")
    state, *rest = memory_need.least_training_needs(sharded, 50_257, 8)
    assert state.bytes == -(-whole // 16 // 8) * 16 and "this rank's shard of 8" in state.what
    assert rest == memory_need.least_training_needs(config, 50_257, 8)[1:]  # activations: each rank's own
    char = dataclasses.replace(sharded, arch="char", char_dim=64, char_hidden=128)
    encoder = memory_need.least_training_needs(char, 50_257, 8)[0].bytes - state.bytes  # whole on every rank
    assert (
        encoder == memory_need.least_training_needs(dataclasses.replace(char, parallel="ddp"), 50_257)[0].bytes - whole
    )
    # As torchrun starts it: 8 ranks, 16 GiB free each.
    monkeypatch.setattr(memory_need, "free_bytes", lambda device: 16 * 2**30)
    memory_need.check_training_memory(sharded, 50_257, torch.device("cpu"), world_size=8)
    with pytest.raises(memory_need.NotEnoughMemory, match="weights, gradients and AdamW state"):
        memory_need.check_training_memory(config, 50_257, torch.device("cpu"), world_size=8)


@pytest.mark.parametrize("content, message", CONFIG_FILE_MISTAKES, ids=lambda v: str(v)[:30])
def test_a_bad_config_file_is_one_line(tiny_corpus, tiny_cache, tmp_path, capsys, content, message):
    config_file = tmp_path / "run.json"
    config_file.write_text(content if isinstance(content, str) else json.dumps(content))
    flags = ["--config", str(config_file), *tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache)]
    assert train.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("charfast.train: error: --config") and message in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("layout", ["folder", "file"])
@pytest.mark.parametrize(
    "content, bad_byte",
    [("Caf\u00e9 au lait\n".encode("latin-1"), "0xe9 at offset 3"), (bytes(range(120, 256)), "0x80 at offset 8")],
    ids=["latin-1", "binary"],
)
def test_data_that_is_not_utf8_is_refused_naming_the_byte(tiny_cache, tmp_path, capsys, layout, content, bad_byte):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("To be, or not to be.\n" * 50, encoding="utf-8")
    (corpus / "b.txt").write_bytes(content)
    data = corpus if layout == "folder" else corpus / "b.txt"
    assert train.main(tiny_flags(data, tmp_path / "run", tiny_cache)) == 2
    err = capsys.readouterr().err
    assert f"{corpus / 'b.txt'} is not UTF-8 text: byte {bad_byte}" in err and len(err.strip().splitlines()) == 1


def test_utf8_with_a_byte_order_mark_and_crlf_reads_as_plain_text(tmp_path):
    from charfast.gpt.sources import read_text_file

    (tmp_path / "a.txt").write_bytes("\ufeffline one\r\nline two\rend".encode())
    assert read_text_file(tmp_path / "a.txt") == "line one\nline two\nend"


def test_cuda_asked_for_without_one(tiny_corpus, tiny_cache, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache, device="cuda")) == 2
    assert "--device cuda: CUDA is not available on this machine" in capsys.readouterr().err


def test_a_block_size_larger_than_the_data(tiny_corpus, tiny_cache, tmp_path, capsys):
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache, block_size=100_000)) == 2
    assert "fewer than block_size + 1 = 100001" in capsys.readouterr().err


def test_an_unwritable_cache_folder_costs_a_rebuild_not_the_run(tiny_corpus, tmp_path, capsys):
    (tmp_path / "FILE").write_text("a file, so nothing can be created under it")
    cache = tmp_path / "FILE" / "cache"
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "run", cache, max_steps=2, sample_tokens=3)) == 0
    assert "keeping the tokens in memory" in capsys.readouterr().out


def test_metrics_with_a_torn_last_line_still_resume(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, eval_interval=1, sample_tokens=0)) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train_lo')  # a kill in the middle of an append
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, sample_tokens=0, resume=True)) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert "dropped its last line, which was cut short" in capsys.readouterr().out
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4, sample_tokens=0, resume=True)) == 2
    assert f"{out / 'metrics.jsonl'}: line 2 is not a metrics record" in capsys.readouterr().err


def test_every_step_is_timed_by_its_own_time_eval_steps_too(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    """Each step takes at least 50 ms here; an eval step read right after the step before it
    must not report the gap between the two reads (it said ~0.3 ms)."""
    original = Trainer.train_step

    def slow_step(self, stop=None):
        time.sleep(0.05)
        return original(self, stop)

    monkeypatch.setattr(Trainer, "train_step", slow_step)
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=6, eval_interval=2, sample_tokens=0)) == 0
    records = read_metrics(out)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]
    assert all(r["ms_per_step"] >= 50 for r in records), [(r["step"], r["ms_per_step"]) for r in records]
    tokens_per_step = 4 * 16  # batch_size x block_size
    assert all(r["tokens_per_s"] <= tokens_per_step / 0.05 for r in records)


def test_resume_without_metrics_starts_a_new_file(tiny_corpus, tiny_cache, tmp_path, capsys):
    """A checkpoint copied without its metrics.jsonl resumes, saying the old records are lost,
    also when there is no step left to train."""
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4, sample_tokens=0)) == 0
    (out / "metrics.jsonl").unlink()
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4, sample_tokens=0, resume=True)) == 0
    assert "metrics.jsonl is missing; the records of steps 1-4 are lost" in capsys.readouterr().out
    assert read_metrics(out) == []
    (out / "metrics.jsonl").unlink()
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=6, sample_tokens=0, resume=True)) == 0
    assert [r["step"] for r in read_metrics(out)] == [5, 6]


def test_data_whose_file_name_is_not_utf8_is_read(tiny_corpus, tiny_cache, tmp_path):
    play = sorted(tiny_corpus.iterdir())[0].read_bytes()
    name = os.fsdecode(bytes(tmp_path) + b"/play\xff.txt")  # a byte that is not UTF-8: a lone surrogate in Python
    with open(name, "wb") as f:
        f.write(play * 2)
    assert train.main(tiny_flags(name, tmp_path / "file", tiny_cache, max_steps=2, sample_tokens=0)) == 0
    folder = os.fsdecode(bytes(tmp_path) + b"/plays\xfe")
    os.mkdir(folder)
    for i, path in enumerate(sorted(tiny_corpus.iterdir())):
        with open(os.fsdecode(os.fsencode(folder) + f"/act{i}\xe9".encode("latin-1") + b".txt"), "wb") as f:
            f.write(path.read_bytes())
    assert train.main(tiny_flags(folder, tmp_path / "folder", tiny_cache, max_steps=2, sample_tokens=0)) == 0

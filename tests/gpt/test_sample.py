"""`python -m charfast.sample`: samples from a checkpoint, streamed, reproducible by seed,
and one clear line (exit 2, no traceback) for every bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_flags, write_tiny_corpus

from charfast.gpt import sample, sampling, train
from charfast.gpt.checkpoint import load_checkpoint, save_checkpoint
from charfast.gpt.run import load_run


@pytest.fixture(scope="module")
def ckpt(tiny_corpus, tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, sample_tokens=0)) == 0
    return out / "ckpt.pt"


def run(capsys, *flags) -> tuple[int, str, str]:
    code = sample.main(["--device", "cpu", *map(str, flags)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_samples_are_streamed_separated_and_reproducible(ckpt, capsys):
    flags = ["--ckpt", ckpt, "--prompt", "KING:", "--num-samples", 2, "--max-new-tokens", 12]
    code, out, err = run(capsys, *flags)
    assert code == 0 and err == ""
    first, second = out.split("-" * 40 + "\n")
    assert first.startswith("KING:") and second.startswith("KING:") and len(first) > len("KING:\n")
    assert run(capsys, *flags)[1] == out  # the same seed, the same samples
    assert run(capsys, *flags, "--seed", 7)[1] != out


def test_each_piece_comes_as_soon_as_its_token(ckpt):
    run = load_run(Path(ckpt).parent, ckpt=ckpt, device="cpu")
    model, encoding = run.model, run.encoding
    produced = []
    original = model.generate_stream

    def counting_stream(*args, **kwargs):
        for token in original(*args, **kwargs):
            produced.append(token)
            yield token

    model.generate_stream = counting_stream
    pieces = sampling.stream_sample(model, encoding, "To be", 10, temperature=1.0, top_k=None)
    next(pieces)
    assert len(produced) == 1  # the first piece did not wait for the other nine tokens
    assert len(list(pieces)) == 10  # nine more tokens and the decoder's final flush


def test_pieces_never_split_a_character(cl100k):
    text = "🍓 strawberry, 日本語, naïve"
    ids = cl100k.encode_ordinary(text)

    def ends_inside_a_character(token: int) -> bool:
        try:
            cl100k.decode_single_token_bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    assert any(ends_inside_a_character(t) for t in ids)  # the case this test is about
    assert "".join(sampling.decoded_pieces(cl100k, iter(ids))) == text


def test_the_default_training_runs_checkpoint(tmp_path, tiny_cache, capsys):
    out = tmp_path / "default"
    flags = ["--out-dir", out, "--cache-dir", tiny_cache, "--max-steps", 2, "--eval-iters", 1, "--sample-tokens", 0]
    assert train.main([*map(str, flags), "--no-progress"]) == 0
    capsys.readouterr()
    code, text, _ = run(capsys, "--ckpt", out / "ckpt.pt", "--max-new-tokens", 5, "--temperature", 0)
    assert code == 0 and text.endswith("\n") and len(text) > 1


def test_a_checkpoint_trained_with_another_backend_samples_here(ckpt, tmp_path, capsys):
    state = load_checkpoint(ckpt)
    state["config"]["char_backend"] = "a-gpu-only-backend"
    moved = tmp_path / "ckpt.pt"
    save_checkpoint(moved, {k: v for k, v in state.items() if k != "format"})
    code, out, _ = run(capsys, "--ckpt", moved, "--max-new-tokens", 3)
    assert code == 0 and out.endswith("\n")


def test_a_checkpoint_with_a_mistyped_setting_is_caught(ckpt, tmp_path, capsys):
    state = load_checkpoint(ckpt)
    state["config"]["lr"] = "fast"
    moved = tmp_path / "ckpt.pt"
    save_checkpoint(moved, {k: v for k, v in state.items() if k != "format"})
    code, out, err = run(capsys, "--ckpt", moved)
    assert code == 2 and out == "" and 'lr must be a number, got "fast"' in err


def test_a_changed_corpus_is_caught(ckpt, tmp_path, capsys):
    state = load_checkpoint(ckpt)
    state["config"]["data"] = str(write_tiny_corpus(tmp_path / "other", n_docs=3))
    moved = tmp_path / "ckpt.pt"
    save_checkpoint(moved, {k: v for k, v in state.items() if k != "format"})
    code, out, err = run(capsys, "--ckpt", moved)
    assert code == 2 and out == "" and "was trained on another corpus than" in err  # its content digest
    # A checkpoint written before they recorded their corpus: the tokenizer's identity tells.
    save_checkpoint(moved, {k: v for k, v in state.items() if k not in ("format", "corpus_sha256")})
    code, out, err = run(capsys, "--ckpt", moved)
    assert code == 2 and out == "" and "has its corpus changed?" in err


@pytest.mark.parametrize("entry", ["tokenizer", "config", "model", "step", "rng"])
def test_a_checkpoint_with_a_broken_entry_names_it(ckpt, tmp_path, capsys, entry):
    state = load_checkpoint(ckpt)
    broken = tmp_path / "broken.pt"
    save_checkpoint(broken, {k: v for k, v in state.items() if k != "format"} | {entry: None})
    code, out, err = run(capsys, "--ckpt", broken)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"checkpoint {broken}: its '{entry}' entry must be" in err, err


def _truncated(ckpt, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return path


def _foreign(ckpt, tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, path)
    return path


@pytest.mark.parametrize(
    "flags, message",
    [
        (lambda ckpt, tmp: ["--ckpt", tmp / "missing.pt"], "no checkpoint at"),
        (lambda ckpt, tmp: ["--ckpt", _truncated(ckpt, tmp)], "is corrupt or not a charfast checkpoint"),
        (lambda ckpt, tmp: ["--ckpt", _foreign(ckpt, tmp)], "has format None"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--prompt", "ab\udcffc"], "--prompt: character 2"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--temperature", -1], "--temperature must be a finite number >= 0"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--top-k", 0], "--top-k must be >= 1"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--num-samples", 0], "--num-samples must be >= 1"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--max-new-tokens", -1], "--max-new-tokens must be >= 0"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--seed", -1], "--seed must lie in"),
        (lambda ckpt, tmp: ["--ckpt", ckpt, "--device", "bogus"], "--device: expected auto, cpu, cuda or cuda:N"),
    ],
    ids=[
        "missing",
        "truncated",
        "foreign",
        "prompt",
        "temperature",
        "nan",
        "top-k",
        "samples",
        "tokens",
        "seed",
        "device",
    ],
)
def test_bad_input_gets_one_clear_line(ckpt, tmp_path, capsys, flags, message):
    code = sample.main([str(flag) for flag in flags(ckpt, tmp_path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("charfast.sample: error: ") and message in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_cli_runs_as_a_module_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "charfast.sample", "--ckpt", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "no checkpoint at" in result.stderr


def test_a_tiny_temperature_samples_as_greedy(ckpt, capsys):
    flags = ["--ckpt", ckpt, "--prompt", "KING:", "--max-new-tokens", 8]
    code, out, err = run(capsys, *flags, "--temperature", "1e-40")
    assert code == 0 and err == ""
    assert out == run(capsys, *flags, "--temperature", "0")[1]


def test_text_the_terminal_cannot_encode_is_replaced(ckpt):
    """An ASCII-only stdout (PYTHONIOENCODING=ascii) gets '?' for what it cannot hold: the
    command still succeeds."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "CUDA_VISIBLE_DEVICES": ""}
    args = ["--ckpt", str(ckpt), "--prompt", "naïve KING:", "--max-new-tokens", "4", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-m", "charfast.sample", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("na?ve KING:")

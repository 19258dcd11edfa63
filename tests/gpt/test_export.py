"""charfast.export: a charfast.train run as a plain Hugging Face GPT-2 folder. Read back in
a fresh process where `import charfast` fails, it gives the run's logits, its greedy
generations and its tokenizer's ids; bad input is one line, and nothing is half-written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_runs import tiny_flags

from charfast.gpt import export, train
from charfast.gpt.checkpoint import load_checkpoint, save_checkpoint
from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.run import load_run

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

# (name, flags): both tie settings, the fold of a char encoder, of a matched embedding and of
# none, and a tiktoken encoding converted by transformers.
RUNS = {
    "char": {},
    "char-untied": dict(tie_weights=False),
    "char-ngram": dict(arch="char-ngram"),
    "char-shuffled": dict(arch="char-shuffled"),
    "baseline-matched": dict(arch="baseline-matched"),
    "baseline": dict(arch="baseline"),
    "char-cl100k": dict(tokenizer="cl100k_base", max_steps=1),
}
NEW_TOKENS = 64

# Runs in a fresh interpreter in which charfast cannot be imported: what a server has.
READER = r"""
import json, sys
sys.modules["charfast"] = None  # import charfast raises ImportError from here on
try:
    import charfast
    raise SystemExit("charfast was importable")
except ImportError:
    pass
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
jobs, out = json.load(open(sys.argv[1])), {}
for name, job in jobs.items():
    model = AutoModelForCausalLM.from_pretrained(job["folder"], use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(job["folder"])
    ids = torch.tensor(job["ids"])
    with torch.no_grad():
        logits = model(ids).logits.numpy()
    model.generation_config.eos_token_id = None  # charfast.sample does not stop at <|endoftext|>
    prompt = torch.tensor([job["prompt"]])
    generated = model.generate(prompt, do_sample=False, max_new_tokens=job["new_tokens"], pad_token_id=0)
    out[name] = dict(
        max_abs_diff=float(np.abs(logits - np.load(job["logits"])).max()),
        generated=generated[0, len(job["prompt"]):].tolist(),
        val_ids=tokenizer.encode(open(job["val_text"], encoding="utf-8").read(), add_special_tokens=False),
        model_class=type(model).__name__,
    )
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def exported(tiny_corpus, tiny_cache, tmp_path_factory):
    """{name: (run folder, export folder)} for every run of RUNS, trained and exported once."""
    root = tmp_path_factory.mktemp("export")
    runs = {}
    for name, flags in RUNS.items():
        run = root / name
        flags = dict(max_steps=3, eval_interval=3, sample_tokens=0, block_size=80) | flags
        assert train.main(tiny_flags(tiny_corpus, run, tiny_cache, **flags)) == 0
        assert export.main(["--ckpt", str(run / "ckpt.pt"), "--out-dir", str(root / f"{name}-hf")]) == 0
        runs[name] = (run, root / f"{name}-hf")
    return runs


def test_the_exported_folders_compute_the_runs_logits_generations_and_ids_without_charfast(
    exported, tiny_corpus, tmp_path
):
    val_text = "".join(index_corpus(str(tiny_corpus), 0.1, seed=1337).texts(val=True))
    (tmp_path / "val.txt").write_text(val_text, encoding="utf-8")
    jobs, expected = {}, {}
    for name, (run_dir, folder) in exported.items():
        run = load_run(run_dir, device="cpu")
        ids = torch.tensor(
            [run.encoding.encode_ordinary(val_text[:2000])[:80], run.encoding.encode_ordinary(val_text[-2000:])[-80:]]
        )
        prompt = run.encoding.encode_ordinary("ROMEO:")
        with torch.no_grad():
            logits, _ = run.model(ids)
            generated = run.model.generate(torch.tensor([prompt]), NEW_TOKENS, temperature=0)[0, len(prompt) :]
        np.save(tmp_path / f"{name}.npy", logits.numpy())
        jobs[name] = dict(
            folder=str(folder),
            ids=ids.tolist(),
            logits=str(tmp_path / f"{name}.npy"),
            prompt=prompt,
            new_tokens=NEW_TOKENS,
            val_text=str(tmp_path / "val.txt"),
        )
        expected[name] = dict(generated=generated.tolist(), val_ids=run.encoding.encode_ordinary(val_text))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, "-c", READER, str(tmp_path / "jobs.json"), str(tmp_path / "out.json")], check=True)
    got = json.loads((tmp_path / "out.json").read_text())
    for name in RUNS:
        assert got[name]["model_class"] == "GPT2LMHeadModel"
        assert got[name]["max_abs_diff"] <= 1e-5, (name, got[name]["max_abs_diff"])
        assert got[name]["generated"] == expected[name]["generated"], name
        assert got[name]["val_ids"] == expected[name]["val_ids"], name


def test_greedy_generation_matches_charfast_sample_at_temperature_0(exported):
    run_dir, folder = exported["char"]
    sampled = subprocess.run(
        [sys.executable, "-m", "charfast.sample", "--ckpt", str(run_dir / "ckpt.pt"), "--prompt", "ROMEO:",
         "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS), "--device", "cpu"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    run = load_run(run_dir, device="cpu")
    prompt = run.encoding.encode_ordinary("ROMEO:")
    with torch.no_grad():
        generated = run.model.generate(torch.tensor([prompt]), NEW_TOKENS, temperature=0)[0].tolist()
    text = run.encoding.decode([t for t in generated if t != run.encoding.eot_token])
    assert sampled == text + "\n"  # the CLI prints the prompt, the new text and a line end


def test_untying_keeps_the_head_and_the_folder_is_plain_and_self_describing(exported):
    from safetensors.torch import load_file

    for name, (run_dir, folder) in exported.items():
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu"
        assert config["n_positions"] == 80 and config["layer_norm_epsilon"] == 1e-5
        files = sorted(p.name for p in folder.iterdir())
        assert "model.safetensors" in files and "tokenizer.json" in files and "generation_config.json" in files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]  # no pickle anywhere
        tensors = load_file(folder / "model.safetensors")
        state = load_checkpoint(run_dir / "ckpt.pt")["model"]
        folds = name not in ("baseline",)
        assert config["tie_word_embeddings"] is (not folds and name != "char-untied")
        if folds:  # the head keeps the trained table (tied or not), wte gains the fold
            head = state["wte.weight"] if name != "char-untied" else state["lm_head.weight"]
            assert torch.equal(tensors["lm_head.weight"], head)
            assert not torch.equal(tensors["transformer.wte.weight"], state["wte.weight"])
        else:
            assert "lm_head.weight" not in tensors and torch.equal(
                tensors["transformer.wte.weight"], state["wte.weight"]
            )
        card = (folder / "README.md").read_text()
        assert f"arch `{json.loads((folder / export.RECORD_NAME).read_text())['run']['settings']['arch']}`" in card


def test_an_export_is_deterministic_and_replaces_an_earlier_export_of_the_same_run(exported, tmp_path):
    run_dir, folder = exported["char"]
    again = tmp_path / "again"
    assert export.main(["--ckpt", str(run_dir / "ckpt.pt"), "--out-dir", str(again)]) == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in folder.iterdir())
    for path in folder.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    (again / "model.safetensors").write_bytes(b"stale")
    assert export.main(["--ckpt", str(run_dir / "ckpt.pt"), "--out-dir", str(again)]) == 0  # replaced whole
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temp or old folder left


def _unknown_arch(run_dir, tmp_path):
    state = load_checkpoint(run_dir / "ckpt.pt")
    state["config"]["arch"] = "char-xl"
    save_checkpoint(tmp_path / "run" / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    return tmp_path / "run" / "ckpt.pt", "char-xl"


def _table_beyond_the_vocabulary(run_dir, tmp_path):
    state = load_checkpoint(run_dir / "ckpt.pt")
    state["model"] = {k: v[:100] if k in ("wte.weight", "lm_head.weight") else v for k, v in state["model"].items()}
    save_checkpoint(tmp_path / "run" / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    return tmp_path / "run" / "ckpt.pt", "(and the char table built from it) has 301 ids, but its weights embed 100"


def _damaged(run_dir, tmp_path):
    (tmp_path / "run").mkdir()
    data = bytearray((run_dir / "ckpt.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "run" / "ckpt.pt").write_bytes(bytes(data))
    return tmp_path / "run" / "ckpt.pt", "ckpt.pt"


def _missing(run_dir, tmp_path):
    return tmp_path / "nowhere" / "ckpt.pt", "no checkpoint at"


@pytest.mark.parametrize("make", [_missing, _damaged, _unknown_arch, _table_beyond_the_vocabulary])
def test_a_bad_run_is_one_line_and_writes_nothing(exported, tmp_path, capsys, make):
    ckpt, message = make(exported["char"][0], tmp_path)
    out = tmp_path / "out"
    assert export.main(["--ckpt", str(ckpt), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("charfast.export: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_an_out_dir_holding_something_else_is_refused_untouched(exported, tmp_path, capsys, monkeypatch):
    run_dir, folder = exported["char"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert export.main(["--ckpt", str(run_dir / "ckpt.pt"), "--out-dir", str(other)]) == 2
    assert "holds something other than an earlier export of this run" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    # Another run's export is something else too.
    assert export.main(["--ckpt", str(exported["baseline"][0] / "ckpt.pt"), "--out-dir", str(folder)]) == 2
    assert "holds something other" in capsys.readouterr().err
    # A failure midway leaves the target as it was and no temp folder behind.
    monkeypatch.setattr(export, "_model_card", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    target = tmp_path / "fresh"
    assert export.main(["--ckpt", str(run_dir / "ckpt.pt"), "--out-dir", str(target)]) == 1
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["other"]

"""README.md's code runs as written: its Python blocks in order, in one namespace, as a
reader copies them (offline, on the CPU, in an empty folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_runs import tiny_flags

from charfast.gpt import export, train

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_readme_python_blocks_run_in_order(tmp_path, monkeypatch, tiny_corpus, tiny_cache):
    pytest.importorskip("transformers")
    blocks = python_blocks()
    assert len(blocks) >= 4  # Use, once per step, Hugging Face, Serve anywhere
    monkeypatch.chdir(tmp_path)  # a block may write files (save_pretrained)
    # "Serve anywhere" loads out/hf: what its two commands write (a tiny run, exported).
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "out", tiny_cache, max_steps=2, block_size=64)) == 0
    assert export.main(["--ckpt", "out/ckpt.pt", "--out-dir", "out/hf"]) == 0
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - reported with the block that failed
            pytest.fail(f"README.md python block {number} fails: {type(err).__name__}: {err}\n{block}")
    assert namespace["x"].shape[-1] == 768  # the Use block's output
    assert namespace["model"].get_input_embeddings().char_embedding is not None  # loaded back char-aware
    assert type(namespace["served"]).__name__ == "GPT2LMHeadModel"  # the export, served by transformers alone

"""Tiny training runs for the tests: a slice of the default corpus and CLI flags of a run
that takes a fraction of a second per step, on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from charfast.gpt.corpus import shakespeare_documents

CHARS_PER_DOC = 12_000


def write_tiny_corpus(folder: Path, n_docs: int = 4, chars_per_doc: int = CHARS_PER_DOC) -> Path:
    """The first chars_per_doc chars of the first n_docs plays, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in shakespeare_documents()[:n_docs]:
        (folder / f"{name}.txt").write_text(text[:chars_per_doc], encoding="utf-8")
    return folder


def tiny_flags(corpus: Path, out_dir: Path, cache_dir: Path, **overrides) -> list[str]:
    """CLI flags of a run that takes a fraction of a second per step, on the default
    (auto) char backend, whose bitwise reproducibility the exact-resume test relies on."""
    values = dict(
        data=corpus,
        out_dir=out_dir,
        cache_dir=cache_dir,
        tokenizer="bpe:300",
        device="cpu",
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        char_dim=8,
        char_hidden=8,
        batch_size=4,
        max_steps=6,
        eval_interval=2,
        eval_iters=2,
        warmup_steps=2,
        sample_tokens=5,
    )
    values.update(overrides)
    flags = ["--no-progress"]
    for key, value in values.items():
        flag = f"--{key.replace('_', '-')}"
        flags += ([flag] if value else [f"--no-{flag[2:]}"]) if isinstance(value, bool) else [flag, str(value)]
    return flags


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two_ranks(flags: list[str]) -> subprocess.CompletedProcess:
    """charfast.train under torchrun with 2 gloo processes on this machine; checked to succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "charfast.train",
        *flags,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world_size=2" in result.stdout
    return result

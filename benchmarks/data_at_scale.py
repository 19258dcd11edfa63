"""Corpora larger than memory: peak memory before the first step against corpus size, and
tokenization throughput against the number of workers and tiktoken's own batch encoding.

    python benchmarks/data_at_scale.py --work-dir /tmp/scale [--sizes-gb 0.3 1 3]

The corpora are jsonl folders (64 MB files; --format text: 1 MB text files, a document each)
of the embedded plays cut into ~3 kB documents, each copy of a play headed by its copy
number so that no two documents are the same. Which charfast is measured is the one the
interpreter imports (PYTHONPATH=an older checkout, --format text --data-workers 0, measures
the code before streaming). For
each size, `python -m charfast.train --data FOLDER --tokenizer cl100k_base` runs in a fresh
process with an empty cache until its first optimizer step, where it reports its peak RSS
and stops: everything before the step (reading, indexing, tokenizing, batching, the model
and the cl100k char table) is in it. Throughput: the cold tokenization of one corpus with
1 and 2 workers, interleaved, beside tiktoken's encode_ordinary_batch(num_threads=2) on the
same documents held in memory. Not a timed test: numbers go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_BYTES = 64 * 2**20  # a jsonl file
TEXT_FILE_BYTES = 2**20  # a text file, one document
DOC_CHARS = 3000


def documents(copy: int, plays: list[str]):
    """Copy number `copy` of the plays, cut at line ends into documents of ~DOC_CHARS."""
    for number, play in enumerate(plays):
        doc = f"Copy {copy} of play {number}.\n"
        for line in play.splitlines(keepends=True):
            doc += line
            if len(doc) >= DOC_CHARS:
                yield doc
                doc = ""
        if doc:
            yield doc


def write_corpus(folder: Path, size_bytes: int, form: str = "jsonl") -> int:
    """A folder of about `size_bytes` of text: jsonl files of FILE_BYTES, or text files of
    TEXT_FILE_BYTES (one document each); returns its documents."""
    from charfast.gpt.corpus import shakespeare_documents

    plays = [text for _, text in shakespeare_documents()]
    folder.mkdir(parents=True, exist_ok=True)
    written = n_docs = copy = 0
    out = None
    while written < size_bytes:
        for doc in documents(copy, plays):
            full = FILE_BYTES if form == "jsonl" else TEXT_FILE_BYTES
            if out is None or out.tell() >= full:
                if out is not None:
                    out.close()
                name = f"part-{n_docs:09d}.{form if form == 'jsonl' else 'txt'}"
                out = open(folder / name, "w", encoding="utf-8")  # noqa: SIM115 - closed when full
                n_docs += form == "text"
            out.write(json.dumps({"text": doc}) + "\n" if form == "jsonl" else doc)
            written += len(doc.encode())
            n_docs += form == "jsonl"
        copy += 1
    out.close()
    return n_docs


def peak_rss_before_the_first_step(data: Path, cache: Path, workers: int) -> dict:
    """In a fresh process: charfast.train on `data` up to its first step; its peak RSS then."""
    code = f"""
import json, sys, time
from charfast.gpt import train
from charfast.gpt.trainer import Trainer
start = time.perf_counter()
def stop(self, *args, **kwargs):
    # VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across fork and exec.
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print("RESULT " + json.dumps(dict(peak_rss=peak, seconds=time.perf_counter() - start,
          train_tokens=len(self.data.train_batches.tokens))), flush=True)
    sys.exit(0)
Trainer.train_step = stop
flags = ["--data", {str(data)!r}, "--tokenizer", "cl100k_base", "--device", "cpu", "--no-progress",
         "--out-dir", {str(cache / "run")!r}, "--cache-dir", {str(cache)!r}]
train.main(flags + (["--data-workers", "{workers}"] if {workers} else []))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"the probe failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[0].removeprefix("RESULT "))


def tokenization_throughput(data: Path, rounds: int) -> dict:
    """MB/s of cold tokenization (cl100k) with 1 and 2 workers, interleaved, and of tiktoken's
    encode_ordinary_batch(num_threads=2) on the same documents held in memory."""
    from charfast.gpt.corpus_index import index_corpus
    from charfast.gpt.token_shards import tokenize_corpus
    from charfast.gpt.tokenizer import get_tiktoken

    encoding = get_tiktoken("cl100k_base")
    index = index_corpus(str(data), 0.1, seed=0)
    texts = [text for piece in index.pieces for _, text in piece.documents()]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    seconds = {"1 worker": [], "2 workers": [], "tiktoken batch, 2 threads": []}
    for _ in range(rounds):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                tokenize_corpus(encoding, index, cache, workers=workers, show_progress=False)
                seconds[f"{workers} worker{'s' * (workers > 1)}"].append(time.perf_counter() - start)
        start = time.perf_counter()
        encoding.encode_ordinary_batch(texts, num_threads=2)
        seconds["tiktoken batch, 2 threads"].append(time.perf_counter() - start)
    return {name: round(megabytes / statistics.median(s), 2) for name, s in seconds.items()} | {"mb": megabytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--sizes-gb", type=float, nargs="*", default=[0.3, 1.0, 3.0])
    parser.add_argument("--throughput-gb", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["jsonl", "text"], default="jsonl", help="of the corpora (default: jsonl)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--data-workers", type=int, default=2, help="of the runs (0: leave the flag out, as code before it must)"
    )
    args = parser.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}, python {sys.version.split()[0]}")
    if not args.skip_throughput:
        throughput_data = args.work_dir / "throughput"
        write_corpus(throughput_data, int(args.throughput_gb * 1e9))
        print("tokenization MB/s:", json.dumps(tokenization_throughput(throughput_data, args.rounds)), flush=True)
        shutil.rmtree(throughput_data)
    for size in args.sizes_gb:
        data = args.work_dir / f"corpus-{size}gb"
        n_docs = write_corpus(data, int(size * 1e9), args.format)
        cache = args.work_dir / f"cache-{size}gb"
        result = peak_rss_before_the_first_step(data, cache, workers=args.data_workers)
        peak = result["peak_rss"] / 2**30
        print(
            f"{size} GB of {args.format} ({n_docs:,} documents): peak RSS before the first step {peak:.2f} GiB, "
            f"{result['seconds']:.0f} s, {result['train_tokens']:,} train tokens",
            flush=True,
        )
        shutil.rmtree(data)
        shutil.rmtree(cache)
    print(f"this script's own peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()

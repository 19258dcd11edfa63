"""Corpora as users bring them: folders of jsonl and parquet files (a text field or
column), and nanoGPT's train.bin / val.bin used as they are; each trains and resumes
bitwise, and bad input is one line naming the file, with nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import read_metrics, tiny_flags

from charfast.gpt import train
from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.sources import corpus_pieces
from charfast.gpt.token_files import open_token_files
from charfast.gpt.tokenizer import get_tiktoken

pq = pytest.importorskip("pyarrow.parquet")  # in the test extras: the parquet reader's only dependency


def _paragraphs(tiny_corpus) -> list[str]:
    texts = [text for piece in corpus_pieces(tiny_corpus) for _, text in piece.documents()]
    return [p + "\n\n" for text in texts for p in text.split("\n\n") if p.strip()]


def write_jsonl(folder, paragraphs, field="text", files=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        rows = [json.dumps({"id": j, field: p}) for j, p in enumerate(paragraphs[i::files])]
        (folder / f"part-{i}.jsonl").write_text("\n".join(rows[:3]) + "\n\n" + "\n".join(rows[3:]) + "\n")
    return folder


def write_parquet(folder, paragraphs, column="text", files=2):
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        part = paragraphs[i::files]
        pq.write_table(pa.table({"id": list(range(len(part))), column: part}), folder / f"part-{i}.parquet")
    return folder


def write_token_files(folder, tiny_corpus, encoding):
    folder.mkdir(parents=True, exist_ok=True)
    index = index_corpus(str(tiny_corpus), 0.25, seed=0)
    for label, val in (("train", False), ("val", True)):
        ids = [t for text in index.texts(val) for t in encoding.encode_ordinary(text) + [encoding.eot_token]]
        np.asarray(ids, dtype=np.uint32).tofile(folder / f"{label}.bin")  # as nanoGPT's prepare.py writes them
    return folder


def test_jsonl_and_parquet_documents_are_their_lines_and_rows(tiny_corpus, tmp_path):
    paragraphs = _paragraphs(tiny_corpus)
    jsonl = write_jsonl(tmp_path / "jsonl", paragraphs)
    docs = [d for piece in corpus_pieces(jsonl) for d in piece.documents()]
    assert sorted(t for _, t in docs) == sorted(paragraphs)
    assert docs[0][0] == "part-0.jsonl:1" and docs[3][0] == "part-0.jsonl:5"  # 1-based lines; blank ones skipped
    parquet = write_parquet(tmp_path / "parquet", paragraphs, column="body")
    docs = [d for piece in corpus_pieces(parquet, text_field="body") for d in piece.documents()]
    assert sorted(t for _, t in docs) == sorted(paragraphs) and docs[1][0] == "part-0.parquet:1"
    (tmp_path / "parquet" / "notes.txt").write_text("a text file beside them\n")
    mixed = [d for piece in corpus_pieces(parquet, text_field="body") for d in piece.documents()]
    assert mixed[0] == ("notes.txt", "a text file beside them\n") and mixed[1:] == docs  # in path order


def test_token_files_are_read_by_memmap_in_the_tokenizers_width(tmp_path):
    for n_vocab, dtype in ((50257, np.uint16), (100277, np.uint32)):
        folder = tmp_path / str(n_vocab)
        folder.mkdir()
        np.arange(1000, dtype=dtype).tofile(folder / "train.bin")
        np.arange(10, dtype=dtype).tofile(folder / "val.bin")
        streams, digest = open_token_files(folder, n_vocab)
        (shard,) = streams["train"].shards
        assert (
            isinstance(shard, np.memmap) and shard.dtype == dtype and str(shard.filename) == str(folder / "train.bin")
        )
        assert streams["val"].window(0, 10).tolist() == list(range(10)) and len(digest) == 64


@pytest.mark.parametrize("form", ["jsonl", "parquet", "bin"])
def test_a_corpus_of_each_form_trains_and_resumes_bitwise(tiny_corpus, tiny_cache, tmp_path, form):
    paragraphs = _paragraphs(tiny_corpus)
    extra = {}
    if form == "jsonl":
        data = write_jsonl(tmp_path / "data", paragraphs)
    elif form == "parquet":
        data = write_parquet(tmp_path / "data", paragraphs)
    else:
        data = write_token_files(tmp_path / "data", tiny_corpus, get_tiktoken("cl100k_base"))
        extra = dict(tokenizer="cl100k_base")
    flags = dict(max_steps=4, lr_decay_steps=4, eval_interval=2, sample_tokens=0, **extra)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(tiny_flags(data, whole, tiny_cache, **flags)) == 0
    assert train.main(tiny_flags(data, split, tiny_cache, **{**flags, "max_steps": 2})) == 0
    assert train.main(tiny_flags(data, split, tiny_cache, **flags, resume=True)) == 0
    assert [r["train_loss"] for r in read_metrics(split)] == [r["train_loss"] for r in read_metrics(whole)]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (whole, split))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _bad_jsonl_field(folder):
    (folder / "a.jsonl").write_text('{"text": "fine"}\n{"text": "also fine"}\n{"body": "no text"}\n')
    return folder, "a.jsonl line 3 has no string field 'text'"


def _bad_json(folder):
    (folder / "a.jsonl").write_text('{"text": "fine"}\n{"text": "cut sh\n')
    return folder, "a.jsonl line 2 is not a JSON object"


def _parquet_without_the_column(folder):
    import pyarrow as pa

    pq.write_table(pa.table({"body": ["one", "two", "three"]}), folder / "a.parquet")
    return folder, "a.parquet has no column 'text' (its columns: ['body'])"


def _damaged_parquet(folder):
    (folder / "a.parquet").write_bytes(b"PAR1 this is not a parquet file at all PAR1")
    (folder / "b.txt").write_text("some text\n")
    return folder, "a.parquet cannot be read as parquet"


def _not_utf8(folder):
    (folder / "a.txt").write_text("fine\n")
    (folder / "b.txt").write_bytes(b"caf\xe9\n")
    return folder, "b.txt is not UTF-8 text: byte 0xe9 at offset 3"


def _ids_beyond_the_vocabulary(folder):
    np.asarray([1, 2, 100277, 4] * 100, dtype=np.uint32).tofile(folder / "train.bin")
    np.asarray([1, 2, 3] * 100, dtype=np.uint32).tofile(folder / "val.bin")
    return folder, "train.bin holds token id 100277 at token 2, outside the tokenizer's 100277 ids"


def _a_torn_token_file(folder):
    np.asarray([1, 2, 3] * 100, dtype=np.uint32).tofile(folder / "train.bin")
    (folder / "val.bin").write_bytes(np.asarray([1, 2, 3], dtype=np.uint32).tobytes() + b"\x01")
    return folder, "val.bin holds 13 bytes, not a whole number of uint32 tokens"


def _no_val_bin(folder):
    np.asarray([1, 2, 3] * 100, dtype=np.uint32).tofile(folder / "train.bin")
    return folder, "holds train.bin but no val.bin beside it"


BAD_CORPORA = [
    _bad_jsonl_field,
    _bad_json,
    _parquet_without_the_column,
    _damaged_parquet,
    _not_utf8,
    _ids_beyond_the_vocabulary,
    _a_torn_token_file,
    _no_val_bin,
]


@pytest.mark.parametrize("make", BAD_CORPORA, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_half_written(tiny_cache, tmp_path, capsys, make):
    (tmp_path / "data").mkdir()
    data, message = make(tmp_path / "data")
    cache = tmp_path / "cache"
    flags = tiny_flags(data, tmp_path / "run", cache, tokenizer="cl100k_base", max_steps=2)
    assert train.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("charfast.train: error: --data: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # the folder it made for the run is gone again
    assert not (cache / "tokens").exists() or not any((cache / "tokens").iterdir())


def test_a_bpe_cannot_be_trained_on_token_files(tiny_corpus, tiny_cache, tmp_path, capsys):
    data = write_token_files(tmp_path / "data", tiny_corpus, get_tiktoken("cl100k_base"))
    assert train.main(tiny_flags(data, tmp_path / "run", tiny_cache, tokenizer="bpe:300")) == 2
    assert "have no text to train a BPE on; name the tokenizer that made them" in capsys.readouterr().err

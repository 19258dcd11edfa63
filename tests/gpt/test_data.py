"""Training data: documents, the split by document, the token cache and sharded batches."""

from pathlib import Path

import numpy as np
import pytest
import torch

from charfast.gpt.bpe import END_OF_TEXT
from charfast.gpt.data import TokenBatches, load_documents, split_documents, tokenize
from charfast.gpt.tokenizer import get_tokenizer


def test_documents_split_by_document(tiny_corpus):
    docs = load_documents(tiny_corpus)
    assert len(docs) == 4
    train_docs, val_docs = split_documents(docs, 0.25, seed=3)
    assert len(val_docs) == 1 and len(train_docs) == 3
    assert {n for n, _ in train_docs}.isdisjoint({n for n, _ in val_docs})
    assert split_documents(docs, 0.25, seed=3) == (train_docs, val_docs)
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents(docs[:1], 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(docs, 1.5)


def test_a_single_file_is_cut_into_documents(tiny_corpus):
    docs = load_documents(next(tiny_corpus.iterdir()))
    assert len(docs) > 10
    assert "".join(text for _, text in docs) == next(tiny_corpus.iterdir()).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="neither a text file nor a folder"):
        load_documents(tiny_corpus / "missing")


def test_token_cache_is_written_once(tiny_corpus, tiny_cache):
    docs = load_documents(tiny_corpus)
    encoding = get_tokenizer("bpe:300", [t for _, t in docs], cache_dir=tiny_cache)
    tokens = tokenize(encoding, docs, "all", cache_dir=tiny_cache, show_progress=False)
    eot = encoding.encode_single_token(END_OF_TEXT)
    assert int((np.asarray(tokens) == eot).sum()) == len(docs)  # one separator after each document
    assert encoding.decode([t for t in tokens.tolist() if t != eot]) == "".join(t for _, t in docs)
    path = Path(tokens.filename)
    stamp = path.stat().st_mtime_ns
    again = tokenize(encoding, docs, "all", cache_dir=tiny_cache, show_progress=False)
    assert Path(again.filename) == path and path.stat().st_mtime_ns == stamp


def test_batches_are_counter_based_and_sharded():
    tokens = np.arange(1000, dtype=np.uint16)
    whole = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    shards = [TokenBatches(tokens, block_size=8, batch_size=3, seed=5, rank=r, world_size=2) for r in range(2)]
    x, y = whole.batch(7)
    assert x.shape == (6, 8) and x.dtype == torch.int64
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    assert torch.equal(torch.cat([s.batch(7)[0] for s in shards]), x)  # the ranks split the global batch
    first = [whole.next()[0] for _ in range(3)]
    resumed = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    resumed.load_state_dict({"position": 2, "seed": 5})
    assert torch.equal(resumed.next()[0], first[2])
    with pytest.raises(ValueError, match="fewer than block_size"):
        TokenBatches(tokens[:8], block_size=8, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        resumed.load_state_dict({"position": 2, "seed": 6})

"""A training run's data: its corpus read and split into train and validation documents,
its tokenizer (trained on the train documents for bpe:N), and both token streams batched
for this process's share of the process group; or token files used as they are."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from charfast.gpt.config import TrainConfig
from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.data import TokenBatches
from charfast.gpt.distributed import Distributed
from charfast.gpt.token_files import open_token_files, token_files_folder
from charfast.gpt.token_shards import tokenize_corpus
from charfast.gpt.tokenizer import get_tokenizer, parse_bpe_name, tokenizer_identity


@dataclass
class RunData:
    encoding: object  # the tiktoken Encoding
    tokenizer_id: dict  # its identity, as checkpoints record it
    corpus_sha256: str  # the corpus by content (checkpoints record it; its path may change)
    train_batches: TokenBatches
    val_batches: TokenBatches


def prepare_data(config: TrainConfig, ddp: Distributed) -> RunData:
    """Read, split, tokenize (from the caches when filled) and batch `config`'s corpus."""
    show = config.progress and ddp.is_main
    folder = token_files_folder(config.data)
    if folder is not None:
        if parse_bpe_name(config.tokenizer) is not None:
            raise ValueError(
                f"--tokenizer {config.tokenizer}: the token files in {folder} have no text to train a BPE on; "
                "name the tokenizer that made them (e.g. gpt2 for nanoGPT's prepare.py)"
            )
        encoding = get_tokenizer(config.tokenizer, train_texts=tuple)
        tokens, corpus_sha256 = open_token_files(folder, encoding.n_vocab)
    else:
        index, encoding = corpus_and_tokenizer(config, show_progress=show)
        workers = config.data_workers or available_cores()
        tokens = tokenize_corpus(encoding, index, config.cache_dir, workers=workers, show_progress=show)
        corpus_sha256 = index.sha256
    shard = dict(rank=ddp.rank, world_size=ddp.world_size)
    return RunData(
        encoding=encoding,
        tokenizer_id=tokenizer_identity(encoding),
        corpus_sha256=corpus_sha256,
        train_batches=TokenBatches(tokens["train"], config.block_size, config.batch_size, seed=config.seed, **shard),
        val_batches=TokenBatches(tokens["val"], config.block_size, config.batch_size, seed=config.seed + 1, **shard),
    )


def corpus_and_tokenizer(config: TrainConfig, show_progress: bool = False):
    """(the index of `config`'s text corpus, its documents split into train and validation by
    config.seed; its tokenizer: a bpe:N one trained on the train documents, or read from the cache)."""
    index = index_corpus(config.data, config.val_fraction, config.seed, config.text_field, show_progress=show_progress)
    train_texts = functools.partial(index.texts, val=False)
    return index, get_tokenizer(config.tokenizer, train_texts, cache_dir=config.cache_dir)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

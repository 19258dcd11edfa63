"""A training run's data: its corpus read and split into train and validation documents,
its tokenizer (trained on the train documents for bpe:N), and both token streams batched
for this process's share of the process group."""

from __future__ import annotations

from dataclasses import dataclass

from charfast.gpt.config import TrainConfig
from charfast.gpt.data import TokenBatches, corpus_digest, load_documents, split_documents, tokenize
from charfast.gpt.distributed import Distributed
from charfast.gpt.tokenizer import get_tokenizer, tokenizer_identity


@dataclass
class RunData:
    encoding: object  # the tiktoken Encoding
    tokenizer_id: dict  # its identity, as checkpoints record it
    corpus_sha256: str  # the corpus by content (checkpoints record it; its path may change)
    train_batches: TokenBatches
    val_batches: TokenBatches


def prepare_data(config: TrainConfig, ddp: Distributed) -> RunData:
    """Read, split, tokenize (from the caches when filled) and batch `config`'s corpus."""
    documents = load_documents(config.data)
    train_docs, val_docs = split_documents(documents, config.val_fraction, seed=config.seed)
    show = config.progress and ddp.is_main
    encoding = get_tokenizer(config.tokenizer, [text for _, text in train_docs], cache_dir=config.cache_dir)
    train_tokens = tokenize(encoding, train_docs, "train", cache_dir=config.cache_dir, show_progress=show)
    val_tokens = tokenize(encoding, val_docs, "val", cache_dir=config.cache_dir, show_progress=show)
    shard = dict(rank=ddp.rank, world_size=ddp.world_size)
    return RunData(
        encoding=encoding,
        tokenizer_id=tokenizer_identity(encoding),
        corpus_sha256=corpus_digest(documents),
        train_batches=TokenBatches(train_tokens, config.block_size, config.batch_size, seed=config.seed, **shard),
        val_batches=TokenBatches(val_tokens, config.block_size, config.batch_size, seed=config.seed + 1, **shard),
    )

"""Shared inputs of the benchmarks: cl100k tokens of the default Shakespeare corpus."""
from __future__ import annotations

import pytest
import torch

from charfast import TokenCharTable
from charfast.corpus import shakespeare_documents
from charfast.tokenizer import get_tiktoken


def batch_ids(tokens: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """[batch, seq_len] windows spread evenly over the tokenized corpus (deterministic)."""
    starts = torch.linspace(0, tokens.numel() - seq_len, batch).long()  # [B]
    return tokens[starts[:, None] + torch.arange(seq_len)]  # [B, T]


@pytest.fixture(scope="session")
def cl100k_table() -> TokenCharTable:
    return TokenCharTable.from_tiktoken(get_tiktoken("cl100k_base"))


@pytest.fixture(scope="session")
def shakespeare_tokens() -> torch.Tensor:
    """[N] cl100k token ids of every play, in order."""
    text = "\n".join(body for _, body in shakespeare_documents())
    return torch.tensor(get_tiktoken("cl100k_base").encode_ordinary(text))

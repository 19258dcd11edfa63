"""Token files used as they are: a folder holding nanoGPT's train.bin and val.bin (flat
token ids as its prepare.py writes them: uint16, or uint32 where the vocabulary outgrows
65,536 ids), named by --data and read by memmap, without a copy, with the tokenizer that
made them (--tokenizer)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from charfast.gpt.sources import CorpusError
from charfast.gpt.token_shards import TokenStream, token_dtype

FILES = {"train": "train.bin", "val": "val.bin"}
_READ_BYTES = 1 << 24


def token_files_folder(data: str | os.PathLike | None) -> Path | None:
    """The folder of train.bin and val.bin that `data` names (the folder, or its train.bin);
    None when `data` names a text corpus."""
    if data is None:
        return None
    path = Path(data)
    folder = path.parent if path.suffix.lower() == ".bin" else path
    if path.suffix.lower() == ".bin" and path.name != FILES["train"]:
        raise ValueError(f"--data: {path}: a token file corpus is named by its folder or its train.bin")
    if not (folder / FILES["train"]).is_file():
        if path.suffix.lower() == ".bin":
            raise ValueError(f"--data: {path} does not exist")
        return None
    if not (folder / FILES["val"]).is_file():
        raise ValueError(f"--data: {folder} holds {FILES['train']} but no {FILES['val']} beside it")
    return folder


def open_token_files(folder: Path, n_vocab: int) -> tuple[dict[str, TokenStream], str]:
    """({"train": ..., "val": ...} read by memmap, their SHA-256) for a tokenizer of
    `n_vocab` ids; a CorpusError naming the file where it is not a whole number of tokens or
    holds an id the tokenizer does not have (at which token)."""
    dtype = token_dtype(n_vocab)
    digest = hashlib.sha256(f"token-files|{dtype.name}|".encode())
    streams = {}
    for label, name in FILES.items():
        path = folder / name
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise CorpusError(
                f"--data: {path} holds {size} bytes, not a whole number of {dtype.name} tokens "
                f"(the width of a {n_vocab}-id tokenizer's ids); is --tokenizer the one that made it?"
            )
        digest.update(f"{name}|{size}|".encode())
        _check_ids(path, dtype, n_vocab, digest)
        streams[label] = TokenStream([np.memmap(path, dtype=dtype, mode="r")] if size else [])
    return streams, digest.hexdigest()


def _check_ids(path: Path, dtype: np.dtype, n_vocab: int, digest) -> None:
    """Read `path` once, adding its bytes to `digest` and checking every id < n_vocab."""
    position = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(_READ_BYTES - _READ_BYTES % dtype.itemsize):
                digest.update(block)
                ids = np.frombuffer(block, dtype=dtype)  # [n]
                bad = np.flatnonzero(ids >= n_vocab)
                if bad.size:
                    raise CorpusError(
                        f"--data: {path} holds token id {int(ids[bad[0]])} at token {position + int(bad[0])}, "
                        f"outside the tokenizer's {n_vocab} ids; is --tokenizer the one that made it?"
                    )
                position += ids.size
    except OSError as err:
        raise CorpusError(f"--data: {path} cannot be read ({err.strerror})") from None

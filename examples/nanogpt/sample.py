"""nanoGPT's sample.py, step for step, on the character-aware model.py of this folder:
the checkpoint's model_args rebuild `GPT(GPTConfig(...))`, its weights load (without
torch.compile's "_orig_mod." prefix), and generate() continues a prompt.

    python examples/nanogpt/sample.py --out-dir out-nanogpt --data-dir data/shakespeare_cl100k --start "ROMEO:"
"""

from __future__ import annotations

import argparse
import os
import pickle

import model as nanogpt_model
import tiktoken
import torch
from model import GPT, GPTConfig


def sample(
    out_dir: str,
    data_dir: str,
    start: str = "\n",
    num_samples: int = 2,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int = 200,
    seed: int = 1337,
    device: str = "cpu",
) -> list[str]:
    torch.manual_seed(seed)
    with open(os.path.join(data_dir, "meta.pkl"), "rb") as f:
        meta = pickle.load(f)
    nanogpt_model.CHAR_ENCODING = meta["encoding"]  # the encoding prepare.py tokenized with
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), map_location=device)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k in list(state_dict):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix) :]] = state_dict.pop(k)
    model.load_state_dict(state_dict)
    model.eval()
    model.to(device)
    enc = tiktoken.get_encoding(meta["encoding"])
    x = torch.tensor(enc.encode_ordinary(start), dtype=torch.long, device=device)[None, ...]
    with torch.no_grad():
        return [
            enc.decode(model.generate(x, max_new_tokens, temperature, top_k)[0].tolist()) for _ in range(num_samples)
        ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default="out-nanogpt")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--start", default="\n")
    args = parser.parse_args()
    for text in sample(args.out_dir, args.data_dir, args.start):
        print(text + "\n---------------")

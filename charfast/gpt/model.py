"""GPT: a nanoGPT-style decoder, baseline or character-aware.

    x = wte(idx) + wpe(pos) [+ char_emb(idx) for an arch with a char encoder
                              | + matched(idx) for one with a matched embedding]
    x = blocks(x)            pre-LN: x + attn(ln(x)), x + mlp(ln(x))
    logits = lm_head(ln_f(x))

Dimensions: B batch, T time (tokens), C = n_embd, H heads, D = C / H head width, V vocab.

The archs are registered in charfast.gpt.archs: "char" (the char encoder over each token's
own chars), "baseline", "baseline-matched" (an extra token embedding and a linear layer
with (nearly) the char encoder's parameter count, so any gain of "char" over it comes from
the characters, not from the extra parameters) and "char-shuffled" (the char encoder
reading a table whose rows are a fixed random permutation, TokenCharTable.shuffled: same
parameters and compute as "char", no true spelling).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from charfast.char_embedding import CharEmbedding
from charfast.encoders import lstm_parameter_count, matched_encoder
from charfast.gpt import archs
from charfast.gpt.chunked_loss import chunk_rows, chunked_head_loss
from charfast.gpt.cross_entropy import IGNORE_INDEX, mean_cross_entropy
from charfast.gpt.generation import GenerationCache, check_sampling, new_tokens
from charfast.table import TokenCharTable

ATTENTION_IMPLS = ("auto", "sdpa", "flash-attn")

try:  # the flash-attn package, used on CUDA when installed
    from flash_attn import flash_attn_func
except ImportError:
    flash_attn_func = None


@dataclass
class GPTConfig:
    vocab_size: int = 513
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    arch: str = "char"
    char_dim: int = 128  # width of each character's embedding (archs with a char encoder)
    char_hidden: int = 128  # char-LSTM hidden size (archs with a char encoder)
    char_backend: str = "auto"  # CharEmbedding backend (archs with a char encoder)
    attention: str = "auto"  # "auto": flash-attn package on CUDA when installed, else SDPA

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "char_dim", "char_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must lie in [0, 1), got {self.dropout!r}")
        archs.get(self.arch, "GPTConfig: arch")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"GPTConfig: attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")


def char_encoder_parameter_count(config: GPTConfig, n_chars: int) -> int:
    """Parameters of the char-LSTM's CharEmbedding(table, n_embd, char_dim, char_hidden)
    without building it: the unit of an arch's budget (charfast.gpt.archs)."""
    return lstm_parameter_count(n_chars, config.char_dim, config.char_hidden, config.n_embd)


def _char_embedding(config: GPTConfig, arch: archs.Arch, table: TokenCharTable) -> CharEmbedding:
    """The char encoder of `arch`: the char-LSTM of the config's sizes, or a cheaper encoder
    sized to the arch's budget of such LSTMs' parameters."""
    if arch.encoder == "lstm":
        return CharEmbedding(
            table, config.n_embd, char_dim=config.char_dim, hidden=config.char_hidden, backend=config.char_backend
        )
    budget = round(arch.budget * char_encoder_parameter_count(config, table.n_chars))
    width, sizes = matched_encoder(arch.encoder, table, config.n_embd, budget, config.char_dim)
    # char_backend is the char-LSTM's (every backend computes the same function); the cheaper
    # encoders run in plain PyTorch.
    return CharEmbedding(
        table, config.n_embd, char_dim=config.char_dim, hidden=width, encoder=arch.encoder, encoder_sizes=sizes
    )


class MatchedEmbedding(nn.Module):
    """The control for arch "char": Embedding(V, width) -> Linear(width, n_embd), with the
    width that brings its parameter count nearest to `target` (it is off by at most
    (V + n_embd) / 2). It sees token ids only, no characters."""

    def __init__(self, vocab_size: int, n_embd: int, target: int):
        super().__init__()
        width = max(1, round((target - n_embd) / (vocab_size + n_embd)))
        self.emb = nn.Embedding(vocab_size, width)
        self.proj = nn.Linear(width, n_embd)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.proj(self.emb(idx))  # [B, T, C]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.attention = config.attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: GenerationCache | None = None, layer: int = 0) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C]. With `cache`, x holds the positions after the cached ones
        (all of the prompt, or one new token) and their keys and values join the cache."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)  # each [B, T, H, D]
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None:
            start = cache.length
            if start and T > 1:
                raise ValueError("GPT: with a cache, several positions at once must start at position 0 (a prefill)")
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
            k, v = cache.update(layer, k, v)  # [B, H, start + T, D]
            y = _sdpa(q, k, v, dropout_p, causal=start == 0).transpose(1, 2)  # [B, T, H, D]
        elif self._use_flash_attn_package(x):
            y = flash_attn_func(q, k, v, dropout_p=dropout_p, causal=True)  # [B, T, H, D]
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
            y = _sdpa(q, k, v, dropout_p, causal=True).transpose(1, 2)  # [B, T, H, D]
        return self.resid_dropout(self.c_proj(y.reshape(B, T, C)))

    def _use_flash_attn_package(self, x: torch.Tensor) -> bool:
        if self.attention == "flash-attn":
            reason = flash_attn_unavailable_reason(x.device)
            if reason is not None:  # asked for by name: never a silent substitute
                raise ValueError(f"GPTConfig.attention='flash-attn' cannot run here: {reason}")
            return True
        return self.attention == "auto" and x.is_cuda and flash_attn_func is not None


def flash_attn_unavailable_reason(device: torch.device) -> str | None:
    """None when the flash-attn package can run on `device`, else why not."""
    if device.type != "cuda":
        return f"the flash-attn package runs on CUDA only, not {device.type}"
    if flash_attn_func is None:
        return "the flash-attn package is not installed (pip install flash-attn)"
    return None


def _chunks_the_head(hidden: torch.Tensor, vocab_size: int) -> bool:
    """Whether the loss runs chunked: on the CPU, in eager mode, where the float32 logits
    would outgrow one chunk (on CUDA the fused loss kernels keep no float32 copy; a trace
    would unroll the chunks; a small vocabulary's logits are one chunk anyway)."""
    rows = hidden.numel() // hidden.shape[-1]
    return hidden.device.type == "cpu" and not torch.compiler.is_compiling() and rows > chunk_rows(vocab_size)


def mixed_precision(device: torch.device):
    """The GPT's precision policy, as a context manager: bf16 autocast on CUDA (FlashAttention
    needs 16-bit activations), float32 elsewhere. GPT.forward and GPT.logits_at_targets enter
    it themselves, so no caller (training, sampling, the study's fine-tuning, evaluation and
    probes) can forget it."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, causal: bool) -> torch.Tensor:
    """SDPA (causal, or all keys for a query after them); on CUDA only the FlashAttention
    kernel may run, so an unsupported input raises instead of silently falling back to the
    slow math kernel."""
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if q.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"GPT: FlashAttention on CUDA needs fp16/bf16 activations, got {q.dtype}; run the "
                "model under torch.autocast('cuda', dtype=torch.bfloat16)"
            )
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: GenerationCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer. `char_table` (the tokenizer's TokenCharTable) is needed
    by an arch with a char encoder or a matched embedding and must cover every id in
    [0, vocab_size)."""

    def __init__(self, config: GPTConfig, char_table: TokenCharTable | None = None):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: config must be a GPTConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.char_emb = None
        self.matched_emb = None
        arch = archs.get(config.arch)
        if arch.encoder is not None:
            if char_table is None:
                raise ValueError(f"GPT: arch={config.arch!r} needs char_table (the tokenizer's TokenCharTable)")
            if char_table.vocab_size != config.vocab_size:
                raise ValueError(
                    f"GPT: char_table covers {char_table.vocab_size} token ids but "
                    f"config.vocab_size is {config.vocab_size}"
                )
            self.char_emb = _char_embedding(config, arch, arch.table_view(char_table))
        elif arch.matched:
            if char_table is None:
                raise ValueError(f"GPT: arch={config.arch!r} needs char_table to know the char encoder's size")
            target = round(arch.budget * char_encoder_parameter_count(config, char_table.n_chars))
            self.matched_emb = MatchedEmbedding(config.vocab_size, config.n_embd, target)
        self.check_ids = True
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2's init for the transformer; the char encoder keeps CharEmbedding's own
        # (the study's) initialisation. Residual projections are scaled by 1/sqrt(2 n_layer).
        transformer = [self.wte, self.wpe, self.blocks, self.lm_head]
        for part in transformer:
            for module in part.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.blocks.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @property
    def check_ids(self) -> bool:
        """Whether an eager forward reads the ids back to refuse those outside the vocabulary
        (and has the char embedding do the same). A caller whose ids come from its own
        tokenizer turns it off, so that a training step never waits for the device."""
        return self._check_ids

    @check_ids.setter
    def check_ids(self, value: bool) -> None:
        self._check_ids = value
        if self.char_emb is not None:
            self.char_emb.check_ids = value

    def num_parameters(self, exclude_positions: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # parameters() counts a tied weight once
        return n - self.wpe.weight.numel() if exclude_positions else n

    def embed(self, idx: torch.Tensor, start: int = 0, token_table: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] token ids at positions start.. -> [B, T, C] input of the first block.
        token_table [V, C] (see token_table()) replaces the per-id embeddings by one lookup."""
        T = idx.shape[1]
        positions = self.wpe(torch.arange(start, start + T, device=idx.device))  # [T, C]
        if token_table is not None:
            return self.drop(F.embedding(idx, token_table) + positions)
        x = self.wte(idx) + positions  # [B, T, C]
        if self.char_emb is not None:
            x = x + self.char_emb(idx)
        if self.matched_emb is not None:
            x = x + self.matched_emb(idx)
        return self.drop(x)

    @torch.no_grad()
    def token_table(self, exact: bool = False) -> torch.Tensor:
        """[V, C]: every id's input embedding without its position, i.e. wte plus the char
        (or matched) embedding, folded into one table for inference, where the weights do
        not change: a lookup in it costs what the baseline's wte lookup costs. exact: in
        float64 on the CPU, the char embedding on its reference backend (for an export)."""
        table = self.wte.weight.detach().cpu().double() if exact else self.wte.weight
        if self.char_emb is not None:
            table = table + (self.char_emb.exact_vocabulary_output() if exact else self.char_emb.vocabulary_output())
        if self.matched_emb is not None:
            matched = copy.deepcopy(self.matched_emb).cpu().double() if exact else self.matched_emb
            table = table + matched(torch.arange(self.config.vocab_size, device=table.device))
        return table

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: GenerationCache | None = None,
        return_logits: bool = True,
    ):
        """idx [B, T] -> (logits [B, T, V], loss or None); loss is the mean cross-entropy over
        the targets that are not IGNORE_INDEX. With `cache` (generation), idx holds the
        positions after the cached ones, whose keys and values then join the cache. Runs
        under the precision policy (mixed_precision), whoever calls it. return_logits=False
        (with targets; training) gives (None, loss), on the CPU without ever holding all
        the logits where they outgrow a chunk (charfast.gpt.chunked_loss: the same loss,
        summed in chunks of rows)."""
        with mixed_precision(idx.device):
            hidden = self._final_hidden(idx, targets, cache)  # [B, T, C]
            if targets is not None and not return_logits and _chunks_the_head(hidden, self.config.vocab_size):
                return None, chunked_head_loss(hidden, self.lm_head.weight, targets)
            logits = self.lm_head(hidden)  # [B, T, V]
            if targets is None:
                return logits, None
            return (logits if return_logits else None), mean_cross_entropy(logits, targets)

    def logits_at_targets(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """idx, targets [B, T] -> float logits [N, V] of the N positions whose target is not
        IGNORE_INDEX, in the order of targets[targets != IGNORE_INDEX]. When few positions are
        scored (fine-tuning on short answers) this skips most of the LM head's work; the
        data-dependent shape keeps it out of compiled graphs."""
        if targets is None:
            raise ValueError("GPT.logits_at_targets: targets are required")
        scored = targets != IGNORE_INDEX  # [B, T]
        with mixed_precision(idx.device):
            return self.lm_head(self._final_hidden(idx, targets)[scored]).float()  # [N, V]

    def _final_hidden(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: GenerationCache | None = None
    ) -> torch.Tensor:
        """idx [B, T] (and its targets, checked here) -> [B, T, C], the LM head's input."""
        self._check_input(idx, "idx")
        if targets is not None:
            self._check_input(targets, "targets")
            if targets.shape != idx.shape:
                raise ValueError(f"GPT: targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}")
        # Data-dependent, so eagerly only; a cached step's token came from this model's own logits.
        if self.check_ids and not torch.compiler.is_compiling() and (cache is None or cache.length == 0):
            self._check_id_range(idx, targets)
        start = 0 if cache is None else cache.length
        if start + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"GPT: positions up to {start + idx.shape[1]} exceed block_size {self.config.block_size} "
                f"(the position table's size)"
            )
        x = self.embed(idx, start, token_table=None if cache is None else cache.token_table)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(idx.shape[1])
        return self.ln_f(x)

    def _check_input(self, t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(
                f"GPT: {name} must be a 2-D tensor [batch, time] of token ids, "
                f"got {type(t).__name__} of shape {tuple(getattr(t, 'shape', ()))}"
            )
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"GPT: {name} must hold integer token ids, got dtype {t.dtype}")

    def _check_id_range(self, idx: torch.Tensor, targets: torch.Tensor | None) -> None:
        """Every id in [0, vocab_size), targets also IGNORE_INDEX: one device->host read."""
        if idx.numel() == 0:
            return
        named = {"idx": idx}
        if targets is not None:
            named["targets"] = targets.masked_fill(targets == IGNORE_INDEX, 0)
        bounds = torch.stack([torch.stack(torch.aminmax(t)) for t in named.values()]).tolist()  # [[low, high]]
        for name, (low, high) in zip(named, bounds):
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"GPT: {name} holds token id {low if low < 0 else high}, outside [0, {self.config.vocab_size}) "
                    "(vocab_size)" + (f" and not {IGNORE_INDEX} (IGNORE_INDEX)" if name == "targets" else "")
                )

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample `max_new_tokens` tokens after the prompt idx [B, T0] -> [B, T0 + max_new_tokens].
        temperature 0 picks the most likely token; top_k keeps only the k most likely.
        use_cache: keys and values of earlier positions are kept (charfast.gpt.generation)
        instead of recomputing the whole prefix for every token."""
        return torch.cat([idx, *self.generate_stream(idx, max_new_tokens, temperature, top_k, use_cache)], dim=1)

    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """generate(), one new token [B, 1] at a time, each as soon as it is chosen."""
        check_sampling(max_new_tokens, temperature, top_k)
        self._check_input(idx, "idx")
        if idx.shape[1] == 0:
            raise ValueError("generate: the prompt idx needs at least one token")
        return new_tokens(self, idx, max_new_tokens, temperature, top_k, use_cache)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM's estimate: 6N + 12 L T C."""
        c = self.config
        return 6 * self.num_parameters(exclude_positions=True) + 12 * c.n_layer * c.block_size * c.n_embd

"""Shared inputs of the benchmarks: cl100k tokens of the default Shakespeare corpus."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
import types

import pytest
import torch
from ratios import Result, by_group

from charfast import GPT, GPTConfig, TokenCharTable
from charfast.baselines.packed_lstm import packed_lstm_char_embedding
from charfast.gpt.bpe import train_bpe
from charfast.gpt.config import PRESETS, TrainConfig, model_config
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.model import mixed_precision
from charfast.gpt.tokenizer import get_tiktoken


def batch_ids(tokens: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """[batch, seq_len] windows spread evenly over the tokenized corpus (deterministic)."""
    starts = torch.linspace(0, tokens.numel() - seq_len, batch).long()  # [B]
    return tokens[starts[:, None] + torch.arange(seq_len)]  # [B, T]


def batch_work(table: TokenCharTable, idx: torch.Tensor) -> dict:
    """How much LSTM work a batch holds: positions, distinct tokens, their chars (S), the
    longest of them (the serial chain), the chars of all positions (the study's work) and
    the nodes of the distinct tokens' trie."""
    ids = torch.unique(idx.cpu())
    lengths = table.lengths[ids].long()
    prefixes = {
        table.chars[i, :n].numpy().tobytes()[:k]
        for i, n in zip(ids.tolist(), lengths.tolist())
        for k in range(1, n + 1)
    }
    return dict(
        positions=idx.numel(),
        distinct=ids.numel(),
        distinct_chars=int(lengths.sum()),
        longest=int(lengths.max()) if lengths.numel() else 0,
        all_chars=int(table.lengths[idx.cpu().reshape(-1)].long().sum()),
        trie_nodes=len(prefixes),
    )


def recurrent_work(work: dict, hidden: int, backward: bool, bytes_per_value: int = 2) -> dict:
    """The least work of the char-LSTM over the distinct tokens: FLOPs of h @ W_hh^T over
    S chars (backward: the dh recurrence and the dW_hh GEMM, each as large as the forward)
    and bytes (W_hh and the outputs once each way, chars as bytes)."""
    passes = 3 if backward else 1
    return dict(
        recurrent_flops=passes * 8 * work["distinct_chars"] * hidden * hidden,
        min_bytes=passes * (4 * hidden * hidden + work["distinct"] * hidden) * bytes_per_value + work["distinct_chars"],
    )


# charfast.train --preset gpt2-small; its char-LSTM width the preset's (256) unless
# CHARFAST_BENCH_CHAR_HIDDEN says otherwise (the GPU target is stated at 128, where the
# resident kernels run).
_CHAR_HIDDEN = int(os.environ.get("CHARFAST_BENCH_CHAR_HIDDEN", PRESETS["gpt2-small"]["char_hidden"]))
GPT2_SMALL = dataclasses.replace(TrainConfig(), **{**PRESETS["gpt2-small"], "char_hidden": _CHAR_HIDDEN})


def gpt2_small_inputs(table: TokenCharTable, tokens: torch.Tensor, batch: int):
    """(GPTConfig, idx [B, T], targets [B, T]) of the gpt2-small preset on CUDA: B windows
    of the tokenized corpus, the targets shifted by one."""
    windows = batch_ids(tokens, batch, GPT2_SMALL.block_size + 1).cuda()  # [B, T+1]
    return model_config(GPT2_SMALL, table.vocab_size), windows[:, :-1], windows[:, 1:]


# A variant's name ends in how it runs: eager without a suffix, else the torch.compile mode.
COMPILE_MODES = {"-compiled": "default", "-cudagraphs": "reduce-overhead"}


def split_variant(variant: str) -> tuple[str, str | None]:
    """(the model a variant's name asks for, its torch.compile mode or None for eager)."""
    for suffix, mode in COMPILE_MODES.items():
        if variant.endswith(suffix):
            return variant.removesuffix(suffix), mode
    return variant, None


def compile_mode_of(variant: str) -> str | None:
    return split_variant(variant)[1]


def build_gpt(variant: str, table: TokenCharTable, config: GPTConfig) -> GPT:
    """The GPT of a benchmark variant, from seed 0: "baseline" (no char embedding),
    "char-<backend>" (CharEmbedding with that backend) or "char-study" (the same char
    encoder computed the study's way, nn.LSTM over packed sequences of all B*T tokens), each
    with an optional COMPILE_MODES suffix (it builds the same model)."""
    torch.manual_seed(0)
    name, _ = split_variant(variant)
    char = name != "baseline"
    backend = "reference" if name == "char-study" else name.removeprefix("char-")
    config = GPTConfig(**{**vars(config), "arch": "char" if char else "baseline", "char_backend": backend})
    model = GPT(config, char_table=table if char else None)
    if name == "char-study":
        model.char_emb.forward = types.MethodType(packed_lstm_char_embedding, model.char_emb)
    return model


def gpt_train_step(model: GPT, idx: torch.Tensor, targets: torch.Tensor, compile_mode: str | None):
    """One training step as charfast.train takes it (bf16 autocast and fused AdamW on CUDA),
    synchronised, returning the loss; compile_mode: a torch.compile mode, None for eager.
    Under "reduce-overhead" inductor replays the forward and backward as CUDA graphs."""
    cuda = idx.device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)

    def step():
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step may overwrite the last one's outputs
        optimizer.zero_grad(set_to_none=True)
        _, loss = forward(idx, targets)  # under the model's precision policy (bf16 autocast on CUDA)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return loss

    return step


def gpt_optimizer_step(model: GPT, micro_batches: list, compile_mode: str | None, once_per_step: bool):
    """One optimizer step over micro_batches [(idx, targets)] as charfast.train takes it
    (bf16 autocast and fused AdamW on CUDA), synchronised, returning the mean loss; with
    once_per_step the char embedding runs once for all micro-batches."""
    cuda = micro_batches[0][0].device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)
    k = len(micro_batches)

    def step():
        optimizer.zero_grad(set_to_none=True)
        block = contextlib.ExitStack()
        with mixed_precision(micro_batches[0][0].device):
            if once_per_step and model.char_emb is not None:
                block.enter_context(model.char_emb.once_per_step([idx for idx, _ in micro_batches]))
        total = 0.0
        with block:
            for idx, targets in micro_batches:
                _, loss = forward(idx, targets)
                (loss / k).backward()
                total = total + loss.detach() / k
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return total

    return step


def round_order(names: list[str], round_index: int) -> list[str]:
    """The order of the steps in round `round_index`: rotated by one each round, so every
    step runs first (after the others, with their caches and clocks) equally often."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def interleaved_times(steps: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each step in each round, the steps interleaved round by round (so drift in
    the machine's speed hits all alike) in an order rotated every round (so does whatever
    running first or after another step costs); the first `warmup` rounds are not counted."""
    times = {name: [] for name in steps}
    for round_index in range(rounds + warmup):
        for name in round_order(list(steps), round_index):
            start = time.perf_counter()
            steps[name]()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(steps: dict, rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds of each step, alternated as interleaved_times does."""
    return {name: statistics.median(values) for name, values in interleaved_times(steps, rounds, warmup).items()}


def paired_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """The median over rounds of times[name] / times[reference] in the same round: a slow
    spell of the machine hits both sides of each ratio."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


def benchmark_interleaved_ratio(
    benchmark, steps: dict, timed: str, reference: str, ratio_name: str, warmup: int, rounds: int = 10
) -> float:
    """Alternate the steps (`rounds` timed rounds after `warmup`), record each one's median
    and the ratio steps[timed] / steps[reference] as `ratio_name` in extra_info, time 3
    calls of steps[timed] as the benchmark itself, and return the ratio."""
    medians = interleaved_medians(steps, rounds=rounds, warmup=warmup)
    ratio = medians[timed] / medians[reference]
    benchmark.extra_info[ratio_name] = round(ratio, 4)
    benchmark.extra_info.update({f"{name}_median_ms": round(median * 1e3, 3) for name, median in medians.items()})
    benchmark.pedantic(steps[timed], rounds=3, warmup_rounds=0)
    return ratio


def bpe_batch(vocab: int, batch: int, seq_len: int) -> tuple[TokenCharTable, torch.Tensor, torch.Tensor]:
    """(the table of a `vocab`-token BPE trained on the default corpus, ids [B, T], targets
    [B, T]): one batch of real text in that tokenizer."""
    texts = [body for _, body in shakespeare_documents()]
    encoding = train_bpe(texts, vocab)  # cached after the first run
    tokens = torch.tensor(encoding.encode_ordinary("\n".join(texts)))
    ids = batch_ids(tokens, batch, seq_len + 1)  # [B, T+1]
    return TokenCharTable.from_tiktoken(encoding), ids[:, :-1], ids[:, 1:]


def load_cl100k_table() -> TokenCharTable:
    return TokenCharTable.from_tiktoken(get_tiktoken("cl100k_base"))


def load_shakespeare_tokens() -> torch.Tensor:
    """[N] cl100k token ids of every play, in order."""
    text = "\n".join(body for _, body in shakespeare_documents())
    return torch.tensor(get_tiktoken("cl100k_base").encode_ordinary(text))


@pytest.fixture(scope="session")
def cl100k_table() -> TokenCharTable:
    return load_cl100k_table()


@pytest.fixture(scope="session")
def shakespeare_tokens() -> torch.Tensor:
    return load_shakespeare_tokens()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Each benchmark group as ratios of medians: how many times slower than the group's fastest."""
    session = getattr(config, "_benchmarksession", None)
    results = (
        [
            Result(b.group, b.name, b.stats.median, b.stats.iqr, b.stats.rounds, b.extra_info)
            for b in getattr(session, "benchmarks", [])
            if b.stats is not None and b.stats.data
        ]
        if session
        else []
    )  # a failed benchmark has no timings
    if not results:
        return
    terminalreporter.section("charfast: ratios within each group (median vs the fastest)")
    for group, ranked in by_group(results).items():
        fastest = ranked[0][0]
        terminalreporter.write_line(group)
        for result, ratio in ranked:
            terminalreporter.write_line(
                f"  {result.name:<60} {result.median * 1e3:10.2f} ms  {ratio:6.2f}x {fastest.variant}"
            )
            for key, value in result.own_ratios.items():
                terminalreporter.write_line(f"    {key}: {value}")

"""nanoGPT's train.py, step for step, on the character-aware model.py of this folder.

The same calls as nanoGPT's script: the vocabulary from meta.pkl, `GPT(GPTConfig(**model_args))`
from scratch or from a checkpoint's model_args (init_from="resume", stripping torch.compile's
"_orig_mod." prefix), crop_block_size, configure_optimizers (and its state restored on
resume), estimate_loss in eval mode under no_grad, the cosine schedule, gradient
accumulation, estimate_mfu and the checkpoint dict. Two differences: the arguments of
train() stand in for nanoGPT's configurator, and with once_per_step (and more than one
micro-batch) the char embedding runs once per optimizer step (CharEmbedding.once_per_step),
which needs every micro-batch drawn before the first one.

    python examples/nanogpt/prepare.py --data-dir data/shakespeare_cl100k
    python examples/nanogpt/train.py --data-dir data/shakespeare_cl100k --out-dir out-nanogpt
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pickle
import time

import model as nanogpt_model
import numpy as np
import torch
from model import GPT, GPTConfig


def train(
    data_dir: str,
    out_dir: str,
    init_from: str = "scratch",
    max_iters: int = 200,
    eval_interval: int = 50,
    eval_iters: int = 10,
    batch_size: int = 12,
    block_size: int = 128,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.0,
    bias: bool = False,
    gradient_accumulation_steps: int = 1,
    once_per_step: bool = True,
    learning_rate: float = 1e-3,
    min_lr: float = 1e-4,
    warmup_iters: int = 20,
    weight_decay: float = 1e-1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    grad_clip: float = 1.0,
    device: str = "cpu",
    seed: int = 1337,
    log_interval: int = 10,
) -> dict:
    """Train as nanoGPT's train.py does; returns {"losses": train loss per iteration,
    "val_losses": {iter: val loss}, "mfu": the last estimate}."""
    config = {k: v for k, v in locals().items()}  # nanoGPT keeps the settings in its checkpoint
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    device_type = "cuda" if "cuda" in device else "cpu"
    ctx = contextlib.nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type, dtype=torch.bfloat16)

    with open(os.path.join(data_dir, "meta.pkl"), "rb") as f:
        meta = pickle.load(f)
    nanogpt_model.CHAR_ENCODING = meta["encoding"]  # the encoding prepare.py tokenized with
    token_dtype = np.dtype(meta["dtype"])

    def get_batch(split):
        data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=token_dtype, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x.to(device), y.to(device)

    iter_num, best_val_loss = 0, 1e9
    model_args = dict(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=block_size,
        bias=bias,
        vocab_size=None,
        dropout=dropout,
    )
    if init_from == "scratch":
        model_args["vocab_size"] = meta["vocab_size"]
        model = GPT(GPTConfig(**model_args))
    elif init_from == "resume":
        checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), map_location=device)
        for k in ["n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size"]:
            model_args[k] = checkpoint["model_args"][k]
        model = GPT(GPTConfig(**model_args))
        state_dict = checkpoint["model"]
        unwanted_prefix = "_orig_mod."
        for k in list(state_dict):
            if k.startswith(unwanted_prefix):
                state_dict[k[len(unwanted_prefix) :]] = state_dict.pop(k)
        model.load_state_dict(state_dict)
        iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
    if block_size < model.config.block_size:
        model.crop_block_size(block_size)
        model_args["block_size"] = block_size
    model.to(device)

    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    if init_from == "resume":
        optimizer.load_state_dict(checkpoint["optimizer"])
    checkpoint = None

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                with ctx:
                    _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        decay_ratio = min(1.0, (it - warmup_iters) / max(1, max_iters - warmup_iters))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (learning_rate - min_lr)

    losses, val_losses, running_mfu = [], {}, -1.0
    t0 = time.time()
    while iter_num < max_iters:
        lr = get_lr(iter_num)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        if iter_num % eval_interval == 0 and iter_num > 0:
            split_losses = estimate_loss()
            val_losses[iter_num] = float(split_losses["val"])
            best_val_loss = min(best_val_loss, val_losses[iter_num])
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "model_args": model_args,
                "iter_num": iter_num,
                "best_val_loss": best_val_loss,
                "config": config,
            }
            torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
        micro_batches = [get_batch("train") for _ in range(gradient_accumulation_steps)]
        char_step = contextlib.nullcontext()
        if once_per_step and gradient_accumulation_steps > 1:  # charfast: one char forward and backward per step
            char_step = model.char_emb.once_per_step([X for X, _ in micro_batches])
        total = 0.0
        with char_step:
            for X, Y in micro_batches:
                with ctx:
                    _, loss = model(X, Y)
                    loss = loss / gradient_accumulation_steps
                loss.backward()
                total += loss.item()
        if grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % log_interval == 0:
            mfu = model.estimate_mfu(batch_size * gradient_accumulation_steps, dt)
            running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
            print(f"iter {iter_num}: loss {total:.4f}, time {dt * 1000:.2f}ms, mfu {running_mfu * 100:.2f}%")
        losses.append(total)
        iter_num += 1
    return {"losses": losses, "val_losses": val_losses, "mfu": running_mfu}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out-dir", default="out-nanogpt")
    parser.add_argument("--init-from", default="scratch", choices=["scratch", "resume"])
    parser.add_argument("--max-iters", type=int, default=200)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    args = parser.parse_args()
    train(
        args.data_dir,
        args.out_dir,
        args.init_from,
        args.max_iters,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )

"""Training batches: random windows of a token stream (charfast.gpt.token_shards), resumable
and sharded across ranks.

Batches are drawn by counter: micro-batch number i takes its window starts from a
generator seeded with (seed, i), so the data position is one integer, a resumed run draws
exactly the batches it would have drawn, and the global batch (batch_size x world_size
rows) is the same whatever the number of ranks; rank r takes rows [r*B, (r+1)*B).
"""

from __future__ import annotations

import numpy as np
import torch

from charfast.gpt.token_shards import TokenStream


class TokenBatches:
    """Random windows of `tokens` (a TokenStream, or one array) as (x, y) [batch_size,
    block_size] int64 batches for this rank. `position` counts the micro-batches drawn; it is
    the resumable state."""

    def __init__(
        self,
        tokens: TokenStream | np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        tokens = tokens if isinstance(tokens, TokenStream) else TokenStream([tokens])
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"the data has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                f"use more data or a smaller block size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0

    def batch(self, index: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch number `index` (this rank's rows of the global batch)."""
        T, B = self.block_size, self.batch_size
        starts = np.random.default_rng([self.seed, index]).integers(0, len(self.tokens) - T, size=B * self.world_size)
        starts = starts[self.rank * B : (self.rank + 1) * B]  # [B]
        windows = np.stack([self.tokens.window(int(s), T + 1) for s in starts])  # [B, T+1]
        windows = torch.from_numpy(windows)
        if torch.device(device).type == "cuda":
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]

    def next(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(self.position, device)
        self.position += 1
        return x, y

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"data state was saved with seed {state.get('seed')!r}, this run uses {self.seed}")
        self.position = int(state["position"])

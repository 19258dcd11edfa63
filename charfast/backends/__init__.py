"""Backend registry for the char-LSTM op.

A backend computes, for the distinct token ids `ids` of a batch, the LSTM state h after
each token's last character:

    char_lstm(gate_table [C, 4H], weight_hh [4H, H], table: TokenCharTable, ids [U] int64) -> h [U, H]

with gate_table[c] = char_emb[c] @ W_ih^T + b_ih + b_hh (torch.nn.LSTM's gate order
i, f, g, o), h = 0 for a zero-length token, and gradients for gate_table and weight_hh.
A backend with takes_padded_ids also takes ids padded with charfast.distinct.PAD_ID
(rows whose h is 0), so a caller can find the distinct ids without a host read.
`reference.py` is the definition every other backend is tested against.

Selection: an explicit name (argument, else the CHARFAST_BACKEND environment variable)
must be able to run on the device, or it raises; "auto" takes the first available
backend in AUTO_ORDER for the device type and says once which one it took.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger("charfast")

# name -> module defining BACKEND; modules are imported on first use so a missing
# compiler or Triton never breaks `import charfast`.
_MODULES = {
    "reference": "charfast.backends.reference",
    "cpp": "charfast.backends.cpp",
    "triton": "charfast.backends.triton",
}

# Preference of "auto", per device type: fused kernels first, the reference last.
AUTO_ORDER = {
    "cuda": ["triton", "cuda", "reference"],
    "cpu": ["cpp", "reference"],
}


@dataclass(frozen=True)
class Backend:
    name: str
    # (gate_table [C,4H], weight_hh [4H,H], table, ids [U]) -> h [U,H]
    char_lstm: Callable
    # device -> None when it can run there, else a sentence saying why not
    unavailable_reason: Callable[[torch.device], str | None]
    # (table, device) -> None: per-table work done eagerly before a forward may be traced by
    # torch.compile (it cannot build caches inside a graph), e.g. the cpp vocabulary trie
    prepare: Callable[[object, torch.device], None] = lambda table, device: None
    # whether char_lstm takes ids padded with PAD_ID (see above)
    takes_padded_ids: bool = False

    def __reduce__(self):
        # Pickled by name (e.g. inside torch.save(model)): unpickling takes the registry's own.
        return (backend_by_name, (self.name,))


_loaded: dict[str, Backend] = {}
_import_errors: dict[str, str] = {}
_announced: set[tuple[str, str]] = set()


def backend_names() -> list[str]:
    return list(_MODULES)


def _load(name: str) -> Backend | None:
    if name in _loaded:
        return _loaded[name]
    if name in _import_errors or name not in _MODULES:
        return None
    try:
        backend = importlib.import_module(_MODULES[name]).BACKEND
    except Exception as err:  # noqa: BLE001 - recorded and reported as the reason
        _import_errors[name] = f"{type(err).__name__}: {err}"
        return None
    _loaded[name] = backend
    return backend


def backend_by_name(name: str) -> Backend:
    """The Backend registered as `name`; a RuntimeError says why when it cannot be loaded."""
    backend = _load(name)
    if backend is None:
        reason = _import_errors.get(name, f"known backends: {', '.join(backend_names())}")
        raise RuntimeError(f"charfast: backend {name!r} cannot be loaded ({reason})")
    return backend


def why_unavailable(name: str, device: torch.device) -> str | None:
    """None if backend `name` can run on `device`, else the reason it cannot."""
    if name not in _MODULES:
        return f"unknown backend {name!r}; known backends: {', '.join(backend_names())}"
    backend = _load(name)
    if backend is None:
        return f"backend {name!r} failed to load ({_import_errors[name]})"
    return backend.unavailable_reason(device)


def resolve_backend(name: str | None, device: torch.device) -> Backend:
    """The Backend to run on `device` for the requested name ("auto", None or explicit)."""
    requested = name if name not in (None, "auto") else os.environ.get("CHARFAST_BACKEND", "auto") or "auto"
    if requested != "auto":
        reason = why_unavailable(requested, device)
        if reason is not None:
            source = "backend=" if name not in (None, "auto") else "CHARFAST_BACKEND="
            raise RuntimeError(f"charfast: {source}{requested!r} cannot run on {device}: {reason}")
        return _loaded[requested]
    skipped = []
    for candidate in AUTO_ORDER.get(device.type, ["reference"]):
        if candidate not in _MODULES:
            continue
        reason = why_unavailable(candidate, device)
        if reason is None:
            if (device.type, candidate) not in _announced:
                _announced.add((device.type, candidate))
                detail = f" ({'; '.join(skipped)})" if skipped else ""
                logger.warning("charfast: auto backend on %s is %r%s", device.type, candidate, detail)
            return _loaded[candidate]
        skipped.append(f"{candidate}: {reason}")
    raise RuntimeError(f"charfast: no backend can run on {device}: {'; '.join(skipped)}")

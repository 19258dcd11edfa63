"""Vendor data-sheet peaks of common GPUs, for MFU and for benchmark floors."""

from __future__ import annotations

import torch

# Device-name fragment -> (dense bf16 tensor-core FLOP/s, memory bytes/s); H100/H200/A100: SXM parts.
GPU_PEAKS = {
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100": (312e12, 2.0e12),
    "L4": (121e12, 0.3e12),
    "A10G": (70e12, 0.6e12),
    "4090": (165e12, 1.0e12),
}


def gpu_peaks(device_name: str) -> tuple[float, float] | None:
    """(FLOP/s, bytes/s) of the first GPU_PEAKS entry whose key is in `device_name`, else None."""
    return next((peak for key, peak in GPU_PEAKS.items() if key in device_name), None)


def peak_flops(device: torch.device) -> float | None:
    """The dense bf16 FLOP/s of `device` when it is a GPU in GPU_PEAKS, else None."""
    if device.type != "cuda":
        return None
    peaks = gpu_peaks(torch.cuda.get_device_name(device))
    return None if peaks is None else peaks[0]

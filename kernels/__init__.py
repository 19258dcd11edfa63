"""Triton kernels of the fused char-LSTM (installed as charfast.kernels)."""

"""Char encoders built on other people's LSTM kernels, the baselines charfast is measured
against: torch.nn.LSTM (packed_lstm: the original study's approach, padded and packed
distinct tokens) and FlashRNN (flashrnn). They compute what CharEmbedding computes from
the same parameters, so the tests check them against the reference."""

"""The char encoders CharEmbedding can run (charfast.encoders), by name; imports no torch,
so the GPT's torch-free arch registry can name them too."""

ENCODERS = ("lstm", "bag", "posbag", "ngram", "ngram-exact", "cnn")  # "lstm": the char-LSTM, CharEmbedding's own

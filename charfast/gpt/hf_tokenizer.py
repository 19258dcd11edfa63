"""A run's tiktoken encoding as a Hugging Face fast tokenizer: transformers' own tiktoken
converter (byte-level BPE, the encoding's split pattern), the special tokens at the ids the
encoding gives them, checked id for id against tiktoken before anything is written.

Imports transformers: only the export uses it.
"""

from __future__ import annotations

import re

import tiktoken

from charfast.gpt.bpe import END_OF_TEXT, end_of_text_id

# What the check encodes besides the caller's texts: contractions, digit runs, whitespace
# runs and line ends, punctuation, accents, CJK, emoji and a byte sequence split by the BPE.
PROBE_TEXT = (
    "I'm sure they'll say it's 1234567 o'clock -- isn't it?\n\n  Indented\tand   spaced,\r\n"
    "naïve café, Straße, Ünïcödé; 東京タワー 👍🏽 (x+y)**2 == 0x1F; ‘quotes’ “and” — dashes…\n"
)


def hf_tokenizer(encoding: tiktoken.Encoding, check_texts: tuple[str, ...] = ()):
    """A transformers PreTrainedTokenizerFast that encodes as `encoding` does; a ValueError
    naming the first text and position where it would not (PROBE_TEXT and `check_texts`)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = encoding._mergeable_ranks

    class FromEncoding(TikTokenConverter):  # the ranks in memory, not re-read from a file
        def load_tiktoken_bpe(self, _):
            return ranks

    tokenizer = FromEncoding(pattern=onig_pattern(encoding._pat_str)).converted()
    # Added tokens take the next free ids in the order they are added: the special tokens
    # go in id order, any id between them that the encoding leaves unused held by a
    # placeholder, so each lands on its own id (cl100k's specials start one id past a gap).
    specials = {token_id: token for token, token_id in encoding._special_tokens.items()}
    added = [specials.get(i, f"<|unused_{i}|>") for i in range(len(ranks), encoding.n_vocab)]
    tokenizer.add_special_tokens(added)
    eot = end_of_text_id(encoding)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=int(1e30),
        **({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT} if eot is not None else {}),
    )
    for token_id, token in specials.items():
        if fast.convert_tokens_to_ids(token) != token_id:
            raise ValueError(
                f"the converted tokenizer gives {token} id {fast.convert_tokens_to_ids(token)}, not {token_id}"
            )
    for text in (PROBE_TEXT, *check_texts):
        check_same_ids(encoding, fast, text)
    return fast


def onig_pattern(pattern: str) -> str:
    """tiktoken's split pattern for the Oniguruma engine of Hugging Face tokenizers, where
    a bounded repeat followed by + (possessive in tiktoken's engine, e.g. cl100k's
    \\p{N}{1,3}+) means the bounded repeat repeated: taken greedy, it matches what the
    possessive form matches wherever nothing follows it in its alternative."""
    return re.sub(r"(\{\d+,\d+\})\+", r"\1", pattern)


def check_same_ids(encoding: tiktoken.Encoding, fast, text: str) -> None:
    """A ValueError naming the first token where `fast` (transformers) and `encoding`
    (tiktoken) encode `text` differently."""
    ours, theirs = encoding.encode_ordinary(text), fast.encode(text, add_special_tokens=False)
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        context = encoding.decode(ours[max(0, at - 3) : at + 3])
        raise ValueError(
            f"transformers' conversion of tokenizer {encoding.name} encodes differently from tiktoken at token {at} "
            f"(near {context!r}): {ours[at : at + 3]} there, {theirs[at : at + 3]} here"
        )

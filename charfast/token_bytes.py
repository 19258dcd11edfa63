"""The bytes of every token of a tokenizer, and a digest that identifies them.

Every family writes its tokens' bytes its own way; each reader here gives, for every id in
[0, V), the exact UTF-8 bytes the token contributes to decoded text (None for special
tokens and unused ids):

    tiktoken        the token's bytes (duck-typed on the Encoding: no tiktoken import)
    byte-level BPE  (GPT-2, RoBERTa, Llama-3, Qwen) each char of the token string stands for
                    one byte through GPT-2's byte -> unicode alphabet: inverted
    SentencePiece   (Llama-2, Mistral, T5, as transformers writes them, or a .model file)
                    "▁" is a space; a byte-fallback token <0xNN> is that one byte
    WordPiece       (BERT) a continuation piece ("##x") without its prefix; a word-initial
                    piece (" x") with the space the decoder writes before a word

A Hugging Face tokenizer whose decoder is none of these, or has a step that the reader
does not model, is refused, naming it: a guessed spelling would train a model on wrong
characters without a word.
"""

from __future__ import annotations

import hashlib
import json
import re

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_METASPACE = "\u2581"  # ▁


def token_bytes(encoding) -> list[bytes | None]:
    """Every id's bytes in [0, n_vocab) of a tiktoken Encoding; None for special tokens and
    for unused ids."""
    special_ids = {encoding.encode_single_token(s) for s in encoding.special_tokens_set}
    out: list[bytes | None] = []
    for token_id in range(encoding.n_vocab):
        try:
            out.append(None if token_id in special_ids else encoding.decode_single_token_bytes(token_id))
        except KeyError:  # an id the encoding does not use
            out.append(None)
    return out


def token_bytes_digest(tokens: list[bytes | None]) -> str:
    """SHA-256 of a token_bytes() list (length-prefixed, so no two lists collide by concatenation)."""
    digest = hashlib.sha256()
    for b in tokens:
        digest.update(b"\xff\xff" if b is None else len(b).to_bytes(2, "little") + b)
    return digest.hexdigest()


# ------------------------------------------------------------------ Hugging Face tokenizers
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the char that stands for each byte -> the byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in kept:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTE_LEVEL_ALPHABET = _byte_level_alphabet()
# The chars of the alphabet to the latin-1 char of their byte; the 68 chars below 256 that the
# alphabet replaces (space, controls) to one that latin-1 cannot encode, so they are refused.
_BYTE_LEVEL_TO_LATIN1 = str.maketrans(
    {
        **{chr(c): "\uffff" for c in range(256) if chr(c) not in BYTE_LEVEL_ALPHABET},
        **{k: chr(b) for k, b in BYTE_LEVEL_ALPHABET.items()},
    }
)


def hf_token_bytes(tokenizer) -> tuple[list[bytes | None], str]:
    """(every id's bytes, the family: "byte-level", "sentencepiece" or "wordpiece") of a
    tokenizers.Tokenizer or a transformers fast tokenizer. Added tokens are plain text, and
    special ones get None, except a <0xNN> token that the tokenizer's ByteFallback decoder
    turns into its byte (users register the 256 byte pieces as special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if type(backend).__name__ != "Tokenizer" or not hasattr(backend, "get_added_tokens_decoder"):
        raise TypeError(
            f"from_hf: tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer "
            f"(use_fast=True), got {type(tokenizer).__name__}"
        )
    family, convert, byte_fallback = _hf_family(backend)
    vocab = backend.get_vocab(with_added_tokens=True)  # token string -> id
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    out: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    model_pieces = [(piece, token_id) for piece, token_id in vocab.items() if token_id not in added]
    for (_, token_id), value in zip(model_pieces, convert([piece for piece, _ in model_pieces])):
        out[token_id] = value
    for token_id, token in added.items():  # added tokens are stored as plain text, not in the model's alphabet
        byte = _fallback_byte(token.content) if byte_fallback else None
        if byte is not None:
            out[token_id] = byte
        else:
            out[token_id] = None if token.special else token.content.encode("utf-8")
    return out, family


def _fallback_byte(piece: str) -> bytes | None:
    """The byte of a byte-fallback piece <0xNN>, else None."""
    match = _BYTE_FALLBACK.match(piece) if piece.startswith("<0x") else None
    return bytes([int(match.group(1), 16)]) if match else None


def _describe_step(step: dict) -> str:
    if step["type"] == "Replace":
        return f"Replace({next(iter(step['pattern'].values()))!r} -> {step['content']!r})"
    if step["type"] == "Strip":
        return f"Strip({step['content']!r}, start={step['start']}, stop={step['stop']})"
    if step["type"] == "WordPiece" and step.get("cleanup", True):
        return "WordPiece(cleanup=True)"
    return step["type"]


def _is_sentencepiece_step(step: dict) -> bool:
    """The steps of a SentencePiece-style decoder that the table models: the space marker
    becomes a space (Metaspace, or Replace of a string with " "), <0xNN> pieces become bytes
    (ByteFallback), pieces are joined (Fuse), and the one space prepended to a text is
    dropped (Strip of a leading " "; a table spells every token, so it keeps that space)."""
    kind = step["type"]
    if kind == "Replace":
        return step["content"] == " " and "String" in step["pattern"]
    if kind == "Strip":
        return step["content"] == " " and step["start"] <= 1 and step["stop"] == 0
    return kind in ("Metaspace", "ByteFallback", "Fuse")


# The decoder steps each family's reader models; any other step would change a spelling unseen.
_MODELED_STEPS = {
    "byte-level": lambda step: step["type"] == "ByteLevel",
    "sentencepiece": _is_sentencepiece_step,
    # cleanup (on in every BERT tokenizer.json) joins a piece to its neighbours (" ," -> ",",
    # " do not" -> " don't"): a spelling that depends on the next token, which no table holds.
    "wordpiece": lambda step: step["type"] == "WordPiece" and not step.get("cleanup", True),
}


def _hf_family(backend):
    """(family, pieces -> their bytes, whether <0xNN> tokens decode to bytes) from the
    tokenizer's decoder: how its tokens become text. Every step of the decoder is modeled,
    or the tokenizer is refused, naming the step."""
    decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else None
    steps = decoder.get("decoders", []) if decoder and decoder["type"] == "Sequence" else [decoder] if decoder else []
    types = [step["type"] for step in steps]
    model = type(backend.model).__name__
    spaces = [step["replacement"] for step in steps if step["type"] == "Metaspace"] + [
        step["pattern"]["String"] for step in steps if _is_sentencepiece_step(step) and step["type"] == "Replace"
    ]
    if "ByteLevel" in types:
        family, convert = "byte-level", _byte_level_bytes
    elif spaces and spaces[0]:
        family, convert = "sentencepiece", _sentencepiece_converter(spaces[0], byte_fallback="ByteFallback" in types)
    elif model == "WordPiece" and "WordPiece" in types:
        prefix = next(step["prefix"] for step in steps if step["type"] == "WordPiece")
        family, convert = "wordpiece", _wordpiece_converter(prefix)
    else:
        raise ValueError(
            f"from_hf: cannot tell how a {model} tokenizer with decoder {' + '.join(types) or 'none'} spells its "
            "tokens; readable: byte-level BPE (ByteLevel decoder), SentencePiece-style (Metaspace, or Replace '▁' "
            "-> ' ', with or without ByteFallback) and WordPiece (WordPiece decoder)"
        )
    unmodeled = [_describe_step(step) for step in steps if not _MODELED_STEPS[family](step)]
    if unmodeled:
        cleanup = (
            "; WordPiece's cleanup makes a token's spelling depend on its neighbours (decode gives "
            "'hello, world.' for the pieces of 'hello , world .'): to spell every piece as the decoder does "
            "without it, set the tokenizer's decoder to tokenizers.decoders.WordPiece(prefix='##', cleanup=False)"
            if "WordPiece(cleanup=True)" in unmodeled
            else ""
        )
        raise ValueError(
            f"from_hf: the decoder of this {family} tokenizer ({' + '.join(map(_describe_step, steps))}) has "
            f"step(s) {', '.join(unmodeled)} that from_hf does not model; a table would spell its tokens "
            f"otherwise than decode does, so it is refused{cleanup}"
        )
    return family, convert, "ByteFallback" in types


def _wordpiece_converter(prefix: str):
    """A continuation piece ("##x") is its text; a word-initial piece ("x") starts a word, so
    it gets the space the decoder writes before it, as "▁x" has it in SentencePiece: the
    encoder can then tell a word start from a continuation."""

    def convert(pieces: list[str]) -> list[bytes]:
        return [(p[len(prefix) :] if p.startswith(prefix) else " " + p).encode("utf-8") for p in pieces]

    return convert


def _byte_level_bytes(pieces: list[str]) -> list[bytes]:
    try:
        return [piece.translate(_BYTE_LEVEL_TO_LATIN1).encode("latin-1") for piece in pieces]
    except UnicodeEncodeError:
        bad = next(p for p in pieces if not all(char in BYTE_LEVEL_ALPHABET for char in p))
        raise ValueError(f"from_hf: byte-level token {bad!r} has a char outside the byte-level alphabet") from None


def _sentencepiece_converter(space: str, byte_fallback: bool):
    def convert(pieces: list[str]) -> list[bytes]:
        out = [piece.replace(space, " ").encode("utf-8") for piece in pieces]
        if byte_fallback:
            for i, piece in enumerate(pieces):
                out[i] = _fallback_byte(piece) or out[i]
        return out

    return convert


# ------------------------------------------------------------------ sentencepiece
def sentencepiece_token_bytes(processor) -> list[bytes | None]:
    """Every id's bytes of a sentencepiece.SentencePieceProcessor: control and unknown ids
    None, byte pieces their byte, the others their text with "▁" as a space."""
    out: list[bytes | None] = []
    for token_id in range(processor.get_piece_size()):
        piece = processor.id_to_piece(token_id)
        if processor.is_control(token_id) or processor.is_unknown(token_id):
            out.append(None)
        elif processor.is_byte(token_id):
            out.append(bytes([int(_BYTE_FALLBACK.match(piece).group(1), 16)]))
        else:
            out.append(piece.replace(_METASPACE, " ").encode("utf-8"))
    return out

"""`PieceTokenizer`: the token ids a SentencePiece-style BPE tokenizer gives a text, memoised per piece.

WordLlama's tokenizer (Llama 2's: `tokenizers` BPE, byte fallback) has no pre-tokenizer: its normaliser turns the
text into one string (a leading "▁", every space a "▁") and BPE merges across the whole of it. No token of its
vocabulary holds a "▁" right after another character, so no merge ever joins the two sides of a point where a
"▁" follows a character that is not one: cut there, the string falls into pieces ("▁+" then no "▁") whose merges
are independent, and the text's ids are the pieces' ids one after the other. Short prompts repeat their words, so
the ids of each piece are memoised (a bounded LRU per instance) and a prompt costs a regular-expression split and
a few dictionary look-ups instead of a pass through the tokenizer.

Exactly the tokenizer's ids, under these conditions, each checked when the tokenizer is given (else every text
goes through `Tokenizer.encode`):
* the normaliser is `Prepend("▁")` then `Replace(" ", "▁")`, no pre-tokenizer; a BPE model without dropout,
  `ignore_merges`, subword prefix or word suffix, with "▁" in its vocabulary and no token holding "▁" after
  another character;
* added tokens ("<s>", "</s>", "<unk>") are cut out of the raw text and each side is normalised on its own (a
  "▁" is prepended to both): a text containing one goes through `Tokenizer.encode`;
* special tokens are not added (`add_special_tokens=False`) and only the first `max_tokens` ids are kept (the
  tokenizer's right-hand truncation): pieces past them are not tokenized at all.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPACE = "\u2581"
PIECES = 8192
"""Pieces remembered per tokenizer (a piece is a word with its leading "▁"s): ~1-2 MB."""
PIECE_MAX_CHARS = 64
"""Longer pieces (long identifiers, URLs, base64) are tokenized each time, not remembered."""
NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": SPACE},
    {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
]}


def independent_pieces(config: dict) -> bool:
    """Whether a tokenizer's JSON config meets the conditions under which its pieces tokenize independently."""
    model = config.get("model") or {}
    vocab = model.get("vocab")
    if (config.get("normalizer") != NORMALIZER or config.get("pre_tokenizer") is not None
            or model.get("type") != "BPE" or model.get("dropout") is not None or model.get("ignore_merges")
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
            or not isinstance(vocab, dict) or SPACE not in vocab):
        return False
    joins = re.compile(f"[^{SPACE}]{SPACE}")
    return not any(joins.search(token) for token in vocab)


class PieceTokenizer:
    """`ids(text)`: what `tokenizer.encode(text, add_special_tokens=False).ids` gives, truncated to `max_tokens`.

    `tokenizer` must be configured as that call expects (no padding, truncation at `max_tokens`): it is the
    fallback for the texts (and tokenizers) the piece rule does not cover.
    """

    __slots__ = ("max_tokens", "fast", "_encode", "_split", "_has_added", "_piece_ids", "_tokenize")

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, *, pieces: int = PIECES) -> None:
        config = json.loads(tokenizer.to_str())
        self.max_tokens = max_tokens
        self.fast = independent_pieces(config)
        """False: every text goes through the tokenizer."""
        self._encode = tokenizer.encode
        self._split = re.compile(f"{SPACE}+[^{SPACE}]*").findall
        added = [re.escape(t["content"]) for t in config.get("added_tokens") or () if t.get("content")]
        self._has_added: Callable[[str], object] = re.compile("|".join(added)).search if added else (lambda _: None)
        model = tokenizer.model

        def tokenize(piece: str) -> tuple[int, ...]:
            return tuple(token.id for token in model.tokenize(piece))

        self._tokenize: Callable[[str], tuple[int, ...]] = tokenize
        self._piece_ids: Callable[[str], tuple[int, ...]] = functools.lru_cache(maxsize=pieces)(tokenize)

    def __repr__(self) -> str:
        return f"PieceTokenizer(max_tokens={self.max_tokens}, fast={self.fast})"

    def ids(self, text: str) -> list[int]:
        """The text's token ids, without special tokens, at most `max_tokens` of them."""
        if not self.fast or self._has_added(text) is not None:
            return self._encode(text, add_special_tokens=False).ids
        if not text:
            return []  # the normaliser prepends nothing to an empty text
        limit = self.max_tokens
        memo = self._piece_ids
        ids: list[int] = []
        try:
            pieces = self._split(SPACE + text.replace(" ", SPACE))
            if 4 * len(text) + 4 <= limit:  # a token spans at least one UTF-8 byte: no truncation possible
                for piece in pieces:
                    ids += memo(piece)
                return ids
            tokenize = self._tokenize
            for piece in pieces:
                ids += memo(piece) if len(piece) <= PIECE_MAX_CHARS else tokenize(piece)
                if len(ids) >= limit:
                    return ids[:limit]
        except UnicodeEncodeError:  # a lone surrogate: the tokenizer's own error, as before
            return self._encode(text, add_special_tokens=False).ids
        return ids

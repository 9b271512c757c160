"""The lexical guard: a semantic candidate is accepted only when the two prompts agree on the words that change
the answer, whatever their cosine similarity.

Small embedders put "convert 5 miles to km" and "convert 50 miles to km" (or "turn on" / "turn off dark mode",
"a haiku" / "a limerick about autumn") closer together than two honest paraphrases, so no threshold can separate
them; the guard does. Each prompt gets a `GuardSignature`; two signatures agree when all of these hold:

1. Exact classes (compared as sets, one hash per class; a difference is reported by the class name):
   `numbers` (digits with `1,000` = `1000`, number words `five` = `5`, ordinals, `twice`/`double`), `negation`
   (how many negators: not, no, never, n't, without, except, unless, avoid, ...), `polarity` (which pole of which
   antonym axis: on/off, enable/disable, increase/decrease, min/max, before/after, import/export, encode/decode,
   ascending/descending, true/false, public/private, ...; `on` counts only after turn/switch/set/...),
   `language` (programming, data and human languages and the big frameworks; `Go`/`C`/`R` only when capitalised
   mid-sentence), `form` (what the answer is: haiku, limerick, sonnet, poem, email, list, table, function, ...),
   `unit` (miles/km/kg/°/%/$/... when they follow a number), `wh` (why/when/where/who opening a question), `symbols` (operator runs such as `==`, `<=`, `+`; not the `!` that ends a word: "Hello!"),
   `quoted` (text in double quotes or backticks, whitespace-collapsed), `script` (non-Latin writing systems
   present); and `tongue`, the human language the prompt is written in, by stop-word counts (en/fr/es/de/it/pt;
   compared only when both prompts have a clear one).
2. Marks: every named entity and code token of each prompt occurs as a word of the other (case-insensitive).
   Entities are capitalised words not at the start of a sentence, all-caps words (`NASA`, `API`) and words
   mixing letters and digits (`GPT4`, `H2O`); code tokens contain `_`, `.`, `::`, `()` between word characters,
   or an inner capital (`camelCase`), and command-line flags (`-la`, `--force`). Reported as `entity`.
3. No word swap: with stop words and request words (explain, describe, write, compose, give, list, ...)
   dropped, suffixes stripped and a few everyday synonyms merged (fast = quick, built = constructed), if each prompt has content words the other lacks, and the prompts share at
   least as many content words as either one changed, they are the same prompt with a word swapped ("sort" /
   "reverse a list in Python") and do not agree. Reported as `swap`.
4. No dropped qualifier: a word that narrows what is asked (`QUALIFIERS` in the lexicon, in groups of forms:
   vegetarian, vegan, gluten, beginner(s), kids/children, pregnant, legal, safe, cheap/budget, healthy, raw,
   remote, local, read: its opposite `write` is a request word, which check 3 ignores, vs/versus/compare/difference:
   "inner join vs outer join" / "inner join", ...)
   in one prompt needs a word of its group in the other ("a vegetarian lasagna recipe" / "a lasagna recipe", where
   check 3 sees a word added, none swapped). Reported as `qualifier`. Computed from the stored word hashes.
5. No reversed direction: around each directional word (`DIRECTIONS`: to, into, onto, towards, than, over,
   against, per, before, instead, minus, divided, beat/defeat/outperform/surpass/overtake/precede/exceed and
   forms; reading right to left: from, after; a participle followed by `by` reads the other way, "Brazil was
   beaten by Germany" is "Germany beat Brazil") the signature keeps ordered pairs (x, y): x one of the nearest
   4 items before the word, y one of the nearest 4 after it, an item being a content word (check 3's) or a
   number ("0.01" one item). A side stops at the next directional word and at a clause boundary (`,` `.` `;`
   `:` `?` `!`), so a fronted clause does not pair ("To travel to Japan, do I need a visa?"). Two prompts
   disagree when a pair of one is reversed in the other and the two do not both hold both directions
   ("convert celsius to fahrenheit" / "fahrenheit to celsius", "Germany beat Brazil" / "Brazil beat Germany",
   "is an elephant bigger than a mouse" / "a mouse bigger than an elephant", "subtract 3 from 10" / "10 from
   3"). Words moved without reversing a pair agree ("from London to Paris" / "to Paris from London", "how far
   is Lyon from Paris" / "from Paris to Lyon", "capital of France" / "France's capital": `of` is not
   directional). Reported as `order`. A pair is the top 32 bits of x's hash then y's (a reversal swaps the
   halves); at most 64 a signature (a long prompt's later pairs are not compared).

Known gaps (the threshold is the only defence there): a sentence-initial capitalised entity is not marked
(the swap check usually catches it), synonyms outside the small table count as a swap (a lost hit, not a wrong
one); word order outside the directional words passes: a verb not in `DIRECTIONS` ("the dog chased the cat" /
"the cat chased the dog"), `of`/`for`, and `in` except in "how many/much X in a/an/one Y" (there it reads left to right: "how many feet
in a mile" / "miles in a foot" disagree; "5 miles in km" is "5 miles to km" but "a mile in feet" is "feet in a
mile", so elsewhere `in` has no one direction), chains whose sides are cut
by another directional word ("miles per gallon to liters per 100 km" and its reverse), one-letter names ("from
A to B"), words the stemmer merges (a word with no vowel is not stemmed, so `https` is not `http`; `ssl`/`tls` never
merged), and a side left empty by an
infinitive `to` ("better to rent than to buy" / "to buy than to rent"); `vs`/`versus` are left out on purpose
("Python vs Java" asks what "Java vs Python" asks). An added narrowing word outside `QUALIFIERS` ("a lasagna recipe"
/ "a lasagna recipe with meat" is caught only when the threshold is not met), and lower-cased entities that are
also stop words (`please`, `ok`: "say please" / "say ok" in a language). `us` after `the` is a content word ("the
population of the us" / "of the uk" is a swap); greetings and thanks inside a sentence are content words ("say thank
you" / "say sorry in Japanese", "say hello" / "say goodbye": swaps; opening a sentence they stay out, "Hello, what
is ..." is only polite: `COURTESIES`), and "every other" is the number 2 ("every day" / "every other day":
`numbers`), both since guard version 4.

Signatures keep 64-bit hashes of words, never the words, so the vector store holds no readable prompt text.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from typing import NamedTuple

import msgspec

from gateway.cache.semantic.lexicon import (
    CASED_LANGUAGES,
    COURTESIES,
    DIRECTIONS,
    FORMS,
    LANGUAGES,
    NEGATIONS,
    NUMBER_WORDS,
    ON_VERBS,
    PASSIVES,
    POLARITY,
    QUALIFIERS,
    REQUEST_WORDS,
    STOPWORDS,
    SYNONYMS,
    UNITS,
    WH_WORDS,
)

GUARD_VERSION = 4
"""Bumped when signatures change meaning (a stored signature of another version never agrees)."""

CLASSES: tuple[str, ...] = (
    "numbers", "negation", "polarity", "language", "form", "unit", "wh", "symbols", "quoted", "script",
)

_STRIP = "\"'“”‘’`.,!?;:()[]{}<>*"
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CODE = re.compile(r"\w[\w]*(?:(?:\.|::|->)\w+)+(?:\(\))?|\w+\(\)|\w*_\w+|[a-z]+[A-Z]\w*")
_FLAG = re.compile(r"--?[A-Za-z][\w-]*")
"""A command-line flag (a code token: `-la` and `-l` differ, though `l` is too short to be a word)."""
_QUOTED = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|`([^`]{1,200})`")
_OPERATORS = re.compile(r"[=<>!+*/&|^~\\]+")
_OPERATOR_CHARS = "=<>!+*/&|^~\\"
"""What `_OPERATORS` matches (most prompts have none: a scan for each is cheaper than the pattern's)."""
_EXCLAIMED = re.compile(r"(?<=[^\W\d_]{2})!+(?=[\s\"')\]]|$)")
"""Exclamation marks that end a word of two or more letters ("Hello!", "Thanks!!"): punctuation, not an operator
(`!=`, `!x`, `5!`, `n!` stay symbols)."""
_SENTENCE_END = (".", "!", "?", ":", ";")

_TONGUES: dict[str, frozenset[str]] = {
    "en": frozenset("the is are and of to what how why in for with this that it you can".split()),
    "fr": frozenset("le les est et des une pour dans qui comment pourquoi quelle quel avec".split()),
    "es": frozenset("el los las es del una para que qué cómo por con está estás".split()),
    "de": frozenset("der die das ist und ein eine für mit wie warum was nicht ich".split()),
    "it": frozenset("il lo gli di una per che come perché con sono".split()),
    "pt": frozenset("os um uma para com que como por não está".split()),
}
_WH_AFTER = frozenset("me know tell ask explain wonder and or but about".split())
_SIDE = 4
"""The order check pairs at most this many words on each side of a directional word (the nearest ones)."""
_MAX_ORDER = 64
"""At most this many ordered pairs in a signature (a long prompt's later ones are not compared)."""
_LOW = 0xFFFFFFFF
_QUANTITY = frozenset(("many", "much"))
_IN_ONE = frozenset(("a", "an", "one"))
"""`in` followed by one of these, after "how many"/"much" in the clause, is directional: "how many feet in a mile"
is not "how many miles in a foot" (while "5 miles in km" keeps `in` out of the order check)."""
_SUFFIXES = ("ations", "ation", "ingly", "ings", "ing", "edly", "ed", "ies", "es", "able", "ly", "s", "e")


class GuardSignature(msgspec.Struct, array_like=True, frozen=True):
    """What the guard compares: one hash per exact class, and hashed marks, words and content words."""

    version: int
    tongue: str
    classes: tuple[int, ...]
    marks: frozenset[int]
    words: frozenset[int]
    content: frozenset[int]
    order: frozenset[int] = frozenset()
    """Ordered pairs of words around a directional word: the top 32 bits of the first word's hash, then the
    second's (so a pair reversed is its halves swapped). Defaulted: a version-1 row decodes, and is refused as
    `version`."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(GuardSignature)


def encode_signature(signature: GuardSignature) -> bytes:
    return _encoder.encode(signature)


def decode_signature(data: bytes) -> GuardSignature | None:
    """The signature, or None for bytes that are not one (treated as a disagreement)."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class _Classes(msgspec.Struct, array_like=True, frozen=True):
    """The leading fields of an encoded `GuardSignature` (the rest are skipped unread)."""

    version: int
    tongue: str
    classes: tuple[int, ...]


_classes_decoder = msgspec.msgpack.Decoder(_Classes)


def stored_classes(data: bytes) -> tuple[int, ...] | None:
    """The exact-class hashes of an encoded signature, or None when no signature of this `GUARD_VERSION` can agree
    with it (another version, or bytes that are not one): a guard can only agree with a stored prompt whose
    classes are equal to its own (`LexicalGuard.disagreement`), so rows are grouped by these (~1 us a row)."""
    try:
        found = _classes_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return found.classes if found.version == GUARD_VERSION and len(found.classes) == len(CLASSES) else None


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _number(text: str) -> str:
    if "," in text and "." not in text and all(len(part) == 3 for part in text.split(",")[1:]):
        text = text.replace(",", "")
    text = text.replace(",", ".")
    if "." in text:
        text = text.rstrip("0").rstrip(".") or "0"
    return text.lstrip("0") or "0"


def _stem(word: str) -> str:
    """A crude suffix stripper: announce, announces, announced and announcing all give `announc`."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    if not any(vowel in word for vowel in "aeiouy"):
        return word  # an acronym ("https", "ssl"): "https" is not a plural of "http"
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith(("ss", "us", "is")):
            return word[: -len(suffix)]
    return word


def _scripts(text: str) -> set[str]:
    out: set[str] = set()
    if text.isascii():
        return out
    for ch in set(text):
        if ord(ch) > 0x24F and ch.isalpha():
            name = unicodedata.name(ch, "")
            if name:
                out.add(name.split(" ", 1)[0])
    return out


def _tongue(unique: set[str]) -> str:
    counts = sorted(((len(unique & vocab), tongue) for tongue, vocab in _TONGUES.items()), reverse=True)
    (best, tongue), (second, _) = counts[0], counts[1]
    return tongue if best >= 2 and best >= second + 2 else "?"


_UNIT_CHARS = frozenset(k for k in UNITS if len(k) == 1)
"""Units written as one character ("%", "$", "€", "°"): counted wherever they occur in a token."""
_TOKEN_MEMO_CHARS = 64
"""Tokens up to this long are remembered (a memo entry stays small; longer ones are rare and computed each time)."""


class _Part(NamedTuple):
    """What one word (a `_WORD` match) contributes to a signature, whatever its position."""

    h: int  # hash of `lower`
    lower: str
    mark: int  # 1: always a mark (all caps, letters and digits); 2: a mark when not at a sentence start; 0: never
    number: str | None
    negation: bool
    on: bool  # the word "on" (a pole only after an `ON_VERBS` word)
    pole: str | None
    language: str | None
    form: str | None
    unit: str | None
    wh: bool
    content: int | None  # hash of its content word, None when the word-swap check ignores it
    before_unit: bool  # a following unit is a quantity's ("5 miles", "five miles", "degrees Fahrenheit")
    before_on: bool  # in `ON_VERBS`
    before_wh: bool  # in `_WH_AFTER`
    item: int | None  # top 32 bits of its content word's or number's hash: a side of a directional word
    direction: int  # `DIRECTIONS` of the word (0: not directional)
    passive: bool  # in `PASSIVES`: a following `by` reverses its direction


class _Token(NamedTuple):
    """What one whitespace-separated token contributes, whatever its position."""

    cased: str | None  # `CASED_LANGUAGES` of the stripped token (counts when not at a sentence start)
    language: str | None  # `LANGUAGES` of the stripped token, lower-cased ("c++", "c#")
    codes: tuple[int, ...]  # hashes of its code tokens (marks)
    parts: tuple[_Part, ...]
    units: tuple[str, ...]  # of its one-character units
    ends: bool  # a sentence starts after it
    comma: bool


def _pair(order: set[int], pending: tuple[int, list[int]], after: list[int]) -> None:
    """Add the ordered pairs of a directional word's sides (nearest `_SIDE` items each) to `order`."""
    direction, before = pending
    for x in before:
        for y in after[:_SIDE]:
            if x != y and len(order) < _MAX_ORDER:
                order.add(x << 32 | y if direction > 0 else y << 32 | x)


def _swap(pair: int) -> int:
    """The pair reversed (its 32-bit halves swapped)."""
    return (pair & _LOW) << 32 | pair >> 32


def _reversed(order: frozenset[int]) -> frozenset[int]:
    return frozenset(_swap(pair) for pair in order)


class LexicalGuard:
    """Builds `GuardSignature`s and says where two of them disagree (see the module docstring)."""

    def __init__(self, memo: int = 65_536) -> None:
        self._polarity_stems = {_stem(word): pole for word, pole in POLARITY.items()}
        # words and tokens repeat from prompt to prompt: what each contributes is remembered (bounded memos per
        # guard), which took a one-sentence signature from ~110 to ~65 us of CPU, and the per-token memo further
        self._stem = functools.lru_cache(maxsize=memo)(_stem)
        self._h = functools.lru_cache(maxsize=memo)(_h)
        self._part = functools.lru_cache(maxsize=memo)(self._part_of)
        self._token_memo = functools.lru_cache(maxsize=memo)(self._token_of)
        self._qualifier_groups = tuple(frozenset(_h(word) for word in group) for group in QUALIFIERS)
        self._qualifiers = frozenset().union(*self._qualifier_groups)
        self._reversed = functools.lru_cache(maxsize=1024)(_reversed)

    def _part_of(self, part: str) -> _Part:
        lower = part.lower().replace("’", "'")
        if part.isupper() and len(part) >= 2 and part.isalpha():
            mark = 1
        elif not part.isalpha() and any(c.isdigit() for c in part) and any(c.isalpha() for c in part):
            mark = 1  # (an all-letter word has no digit)
        elif (
            part[0].isupper() and part != "I" and lower not in STOPWORDS
            and lower not in LANGUAGES and lower not in FORMS and lower not in UNITS
        ):
            mark = 2
        else:
            mark = 0
        on = lower == "on"
        pole = None if on else (POLARITY.get(lower) or self._polarity_stems.get(self._stem(lower)))
        if ((lower in STOPWORDS and lower not in COURTESIES) or lower in REQUEST_WORDS or lower in NEGATIONS
                or lower in NUMBER_WORDS or lower.isdigit() or len(lower) < 2):
            content = None
        else:
            w = UNITS.get(lower, FORMS.get(lower, lower))
            w = SYNONYMS.get(w, w)
            stem = self._stem(w)
            content = self._h(SYNONYMS.get(stem, stem))
        number = NUMBER_WORDS.get(lower)
        direction = DIRECTIONS.get(lower, 0)
        if direction:
            item = None
        elif content is not None:
            item = content >> 32
        elif number is not None or lower.isdigit():
            item = self._h("#" + (number or _number(lower))) >> 32
        else:
            item = None
        return _Part(
            h=self._h(lower[:-2] if lower.endswith("'s") and len(lower) > 3 else lower),  # France's = France
            lower=lower, mark=mark, number=number,
            negation=lower in NEGATIONS or lower.endswith("n't"), on=on, pole=pole, language=LANGUAGES.get(lower),
            form=FORMS.get(lower), unit=UNITS.get(lower), wh=lower in WH_WORDS, content=content,
            before_unit=lower in UNITS or lower in NUMBER_WORDS or lower[-1:].isdigit(),
            before_on=lower in ON_VERBS, before_wh=lower in _WH_AFTER, item=item, direction=direction,
            passive=lower in PASSIVES,
        )

    def _token_of(self, token: str) -> _Token:
        stripped = token.strip(_STRIP)
        if stripped.isalpha() and stripped.islower():
            codes: tuple[int, ...] = ()  # no capital, `_`, `.`, `:`, `-` or `(`: no code token
        else:
            codes = tuple(self._h(code.lower()) for code in _CODE.findall(stripped))
            if _FLAG.fullmatch(stripped):  # a command-line flag: `ls -la` / `ls -l`, `--force`
                codes += (self._h(stripped.lower()),)
        # a token of letters between stripped punctuation is one word (`_WORD` would find just that)
        words = (stripped,) if stripped.isalpha() else _WORD.findall(token)
        parts = tuple(self._part(w) for w in words)
        if len(parts) > 1 and _NUMBER.fullmatch(stripped):  # "0.01", "1,000": one side of a directional word
            item = self._h("#" + _number(stripped)) >> 32
            parts = (parts[0]._replace(item=item),) + tuple(part._replace(item=None) for part in parts[1:])
        return _Token(
            cased=CASED_LANGUAGES.get(stripped), language=LANGUAGES.get(stripped.lower()), codes=codes,
            parts=parts,
            units=tuple(UNITS[ch] for ch in token if ch in _UNIT_CHARS),
            ends=token.endswith(_SENTENCE_END) or token in ("-", "*", "•"), comma=token.endswith(","),
        )

    def signature(self, text: str) -> GuardSignature:
        memo, token_of = self._token_memo, self._token_of
        words: set[str] = set()  # lower-cased words (for the tongue)
        hashes: set[int] = set()  # of those words
        marks: set[int] = set()
        content: set[int] = set()
        numbers: set[str] = (
            {_number(n) for n in _NUMBER.findall(text)}
            if not text.isascii() or any(d in text for d in "0123456789") else set()  # ASCII `\d` is 0-9
        )
        polarity: set[str] = set()
        languages: set[str] = set()
        forms: set[str] = set()
        units: set[str] = set()
        wh: set[str] = set()
        negation = 0
        sentence_start = True
        previous: _Part | None = None
        at_start = True
        order: set[int] = set()
        segment: list[int] = []  # items since the last directional word or clause boundary
        pending: tuple[int, list[int]] | None = None  # the last directional word's direction and items before it
        quantity = False  # "many"/"much" seen in this clause
        for token in text.split():  # str.split() splits where `\s` matches
            t = memo(token) if len(token) <= _TOKEN_MEMO_CHARS else token_of(token)
            if t.cased is not None and not sentence_start:
                languages.add(t.cased)
            elif t.language is not None:
                languages.add(t.language)
            marks.update(t.codes)
            for part in t.parts:
                words.add(part.lower)
                hashes.add(part.h)
                if part.mark == 1 or (part.mark == 2 and not sentence_start):
                    marks.add(part.h)
                opening, sentence_start = sentence_start, False
                if part.lower in _QUANTITY:
                    quantity = True
                elif quantity and previous is not None and previous.lower == "in" and part.lower in _IN_ONE:
                    if pending is not None:  # "how many feet in a mile": `in` reads left to right here
                        _pair(order, pending, segment)
                    pending, segment = (1, segment[-_SIDE:]), []
                if part.lower == "us" and previous is not None and previous.lower == "the":
                    content.add(self._h("\x1fus"))  # "the us" is a country, not the pronoun ("the uk")
                if part.content is not None and not (opening and part.lower in COURTESIES):  # "Hello, ..." is polite
                    content.add(part.content)
                if part.number is not None:
                    numbers.add(part.number)
                elif part.lower == "other" and previous is not None and previous.lower == "every":
                    numbers.add("2")  # "every other day" is "every 2 days", not "every day"
                if part.negation:
                    negation += 1
                if part.on:
                    if previous is not None and previous.before_on:
                        polarity.add("on+")
                elif part.pole is not None:
                    polarity.add(part.pole)
                if part.language is not None:
                    languages.add(part.language)
                if part.form is not None:
                    forms.add(part.form)
                if part.unit is not None and previous is not None and previous.before_unit:
                    units.add(part.unit)  # a unit of a quantity: "5 miles", "40 degrees Fahrenheit"
                if part.wh and (at_start or (previous is not None and previous.before_wh)):
                    wh.add(part.lower)  # a question, not a relative pronoun ("a cat who learns")
                if part.item is not None:
                    segment.append(part.item)
                elif part.direction:
                    if pending is not None:
                        _pair(order, pending, segment)
                    pending, segment = (part.direction, segment[-_SIDE:]), []
                elif part.lower == "by" and pending is not None and previous is not None and previous.passive:
                    pending = (-pending[0], pending[1])  # "Brazil was beaten by Germany"
                previous = part
                at_start = False
            if t.units:
                units.update(t.units)  # "%", "$", "€", "°"
            if t.ends:
                sentence_start = True
            at_start = sentence_start or t.comma
            if at_start:
                quantity = False
            if at_start and (segment or pending is not None):  # a clause ends: directions do not cross it
                if pending is not None:
                    _pair(order, pending, segment)
                    pending = None
                segment = []
        quoted = (
            {" ".join(next(g for g in m if g).lower().split()) for m in _QUOTED.findall(text)}
            if ('"' in text or "“" in text or "`" in text) else set()
        )
        if pending is not None:
            _pair(order, pending, segment)
        symbols = set(_OPERATORS.findall(_EXCLAIMED.sub("", text) if "!" in text else text)) if any(
            c in text for c in _OPERATOR_CHARS) else set()
        classes = (
            numbers, {str(negation)}, polarity, languages, forms, units, wh, symbols, quoted, _scripts(text),
        )
        _h = self._h
        return GuardSignature(
            version=GUARD_VERSION,
            tongue=_tongue(words),
            classes=tuple(_h("\x1f".join(sorted(values))) for values in classes),
            marks=frozenset(marks),
            words=frozenset(hashes | marks),
            content=frozenset(content),
            order=frozenset(order),
        )

    def disagreement(self, a: GuardSignature, b: GuardSignature) -> str | None:
        """None when the two prompts may share an answer, else the first check that failed."""
        if a.version != b.version or a.version != GUARD_VERSION or len(a.classes) != len(b.classes):
            return "version"
        if a.tongue != b.tongue and "?" not in (a.tongue, b.tongue):
            return "tongue"
        for name, left, right in zip(CLASSES, a.classes, b.classes):
            if left != right:
                return name
        if not a.marks <= b.words or not b.marks <= a.words:
            return "entity"
        a_only = a.content - b.content
        b_only = b.content - a.content
        if a_only and b_only and len(a.content & b.content) >= max(len(a_only), len(b_only)):
            return "swap"
        qualifiers = self._qualifiers  # most prompts have none: two disjointness tests, no set built
        if (not qualifiers.isdisjoint(a.words) or not qualifiers.isdisjoint(b.words)) and any(
            a.words.isdisjoint(group) != b.words.isdisjoint(group) for group in self._qualifier_groups
        ):
            return "qualifier"
        if a.order and b.order:
            reversed_a = self._reversed(a.order)  # `a`, the lookup's signature, is the same for every candidate
            if not b.order.isdisjoint(reversed_a):
                for pair in b.order & reversed_a:  # one prompt has the pair, the other its reverse
                    if pair not in a.order or _swap(pair) not in b.order:  # and not both of them each
                        return "order"
        return None

    def agree(self, a: str, b: str) -> str | None:
        """`disagreement` of two texts (for tools and tests)."""
        return self.disagreement(self.signature(a), self.signature(b))

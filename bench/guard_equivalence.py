"""Lexical-guard signatures of this tree against a baseline tree's, prompt by prompt: they must be bit-identical.

Usage: python bench/guard_equivalence.py --baseline-tree /work/wt/base [--synthetic 3000]

Each tree's own `gateway.cache.semantic.guard` (a subprocess with that tree first on the path) computes
the signature of every prompt (its fields, sets sorted; each
`encode_signature` is checked to decode to the same signature): both sides of gateway/cache/data/semantic_pairs.jsonl, the
Arena-Hard and routing dev prompts, hand-written edge cases (unicode, scripts, numbers with commas, code) and
random mixes of lexicon words, punctuation and scripts (seed 1); and the `disagreement` verdict of every labelled
pair and of random pairs of those prompts. The raw bytes of `encode_signature` are not compared: msgspec writes a
frozenset in iteration order, which depends on string hashing (PYTHONHASHSEED), so they differ between two
processes of the same tree; the decoded signature (what `disagreement` compares) is what must not move. The parent prints, per set, how many encodings and verdicts differ.
Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAIRS = ROOT / "gateway/cache/data/semantic_pairs.jsonl"
DATA = [ROOT.parent.parent / "shared/data/chat/arena-hard-prompts.jsonl",
        ROOT.parent.parent / "shared/data/routing/dev.jsonl"]

EDGE = [
    "", " ", "\n\t ", ".", "...", "-", "* item", "• bullet", "a", "I", "I'm", "don't", "Don’t do it", "can't won't",
    "Convert 5 miles to km.", "Convert 50 miles to km.", "1,000 vs 1000 vs 1.000 vs 1,00 vs 1,0000 vs 0.50 vs 00.5",
    "12,345,678.90 and 3,14 and 007 and 0 and 0.0 and .5 and 5. and 1e10 and -3 and +4", "10% of $5 is 50¢ at 40°F",
    "€5 £3 ¥100 5€ 20°C 30 °C 100 km/h 60mph 5 miles 5 mi 5 MILES", "five miles, twice, double, third, a dozen",
    "Turn on dark mode", "Turn off dark mode", "a poem on love", "Switch it on.", "set on", "On the other hand",
    "Write a function in Go.", "Go home.", "Use C and R, then C++ and C# and F#.", "In C: printf. R is nice",
    "Why is the sky blue?", "Tell me why", "a cat who learns", "And when?", "Who, where, whom, whose",
    "Use `foo.bar()` and \"quoted  text\n here\" and “curly quotes” and 'single'", "``", '""', "“”",
    "def foo_bar(x): return x.y::z->w + a == b <= c != d && e || f ^ g ~ h \\ i",
    "camelCase snake_case kebab-case PascalCase SCREAMING_CASE mixedUp123 GPT4 H2O gpt-4o x86_64",
    "std::vector<int> v; v.push_back(1); obj->field; print() len() __init__", "NASA API USA OK A B C",
    "Ünïcödé café naïve résumé façade Ångström ß straße STRASSE ǅ ǈ ﬁne ﬂow", "İstanbul ıi I İ",
    "Привет, как дела? Москва", "こんにちは世界、東京タワー", "你好，世界！北京", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "Γειά σου Κόσμε", "안녕하세요 서울", "สวัสดีชาวโลก", "ⅷ ½ ² ³ ٣ ४ ① ⑴ 𝟙 𝟚",
    "emoji 😀 🚀 👍🏽 ❤️ text", "zero\u200bwidth\u200djoiner\ufeffbom", "tab\tsep\x1cfile\x1dgroup\x1erec\x1funit",
    "surrogate \ud83d alone", "combining e\u0301 a\u0308 n\u0303", "full-width ＡＢＣ １２３ ｈｅｌｌｏ",
    "Comment ça va ? Pourquoi le ciel est bleu et quelle est la réponse", "¿Qué es esto? ¿Cómo está usted con el",
    "Warum ist der Himmel blau und was ist das für ein", "Perché il cielo è blu e come sono gli", "Por que não está",
    "Enable the increasing ascending sort, then disable decreasing descending", "maximize minimise largest lowest",
    "encode/decode import/export before/after true/false public/private push/pull login/logout",
    "Explain how to sort a list in Python", "Explain how to reverse a list in Python", "haiku vs limerick",
    "The quick brown fox jumps over the lazy dog. The Lazy Dog sleeps!", "Mr. Smith met Dr. Jones in Paris.",
    "without except unless avoid never no none nothing nobody neither nor", "isn’t aren’t it’s John’s Mary's",
    "a" * 500, "word " * 300, "x" * 70 + "_y", "A.B.C. U.S.A. e.g. i.e. etc.", "3.14159 2.71828 1,234.5",
    "<html><body class=\"a\">Hi</body></html>", "SELECT * FROM t WHERE a >= 5 AND b <> 'x';", "|x| <= 5 && y != 0",
    "1st 2nd 3rd 4th 21st 100th", "9:30 am 12:00pm 2024-01-01 01/02/2003", "v1.2.3 1.2.3.4 192.168.0.1:8080",
    "ｷｬｯﾁ ｶﾀｶﾅ", "Ⅻ Ⅳ ⅳ", "\u2028line\u2029para\x85nel\xa0nbsp\u3000ideo", "‘quoted’ ’tis", "O’Brien’s O'Neil's",
]


def _prompts(path: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.open(encoding="utf-8") if line.strip()]


def _random_prompts(rng: random.Random, n: int) -> list[str]:
    """Mixes of lexicon words (any case), numbers, punctuation, code-ish tokens and non-Latin characters."""
    sys.path.insert(0, str(ROOT))
    from gateway.cache.semantic import lexicon

    vocab = sorted(set(lexicon.NUMBER_WORDS) | lexicon.NEGATIONS | set(lexicon.POLARITY) | lexicon.ON_VERBS
                   | set(lexicon.LANGUAGES) | set(lexicon.FORMS) | set(lexicon.UNITS) | lexicon.WH_WORDS
                   | set(lexicon.SYNONYMS) | lexicon.REQUEST_WORDS | lexicon.STOPWORDS)
    vocab += ["Go", "C", "R", "on", "I", "NASA", "GPT4", "foo.bar", "a_b", "f()", "x::y", "p->q", "camelCase", "5",
              "1,000", "3.50", "$", "%", "°", "€", "==", "<=", "+", "-", "*", "•", "ß", "Ω", "Ж", "字", "😀", "ǅ"]
    punct = ["", "", "", ".", ",", "?", "!", ":", ";", "'s", "’", "\"", "`", "(", ")", "n't", "…", "-"]
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(1, 25)):
            w = rng.choice(vocab)
            w = rng.choice([w, w, w.capitalize(), w.upper()])
            words.append(rng.choice(punct) * rng.randint(0, 1) + w + rng.choice(punct))
        out.append(rng.choice([" ", " ", "\n", "  ", "\t"]).join(words))
    return out


def _dump(tree: Path, inputs: Path, out: Path) -> None:
    """Child: `tree`'s guard encodes every prompt of `inputs` and judges its pairs into `out`."""
    sys.path.insert(0, str(tree))
    from gateway.cache.semantic import guard as module
    from gateway.cache.semantic.guard import LexicalGuard, decode_signature, encode_signature

    def canonical(sig) -> str:
        """The signature's fields with its sets sorted (msgspec writes a set in iteration order, which follows
        insertion order and string hashing: the raw bytes of one signature differ from process to process)."""
        data = encode_signature(sig)
        assert decode_signature(data) == sig
        return json.dumps([sig.version, sig.tongue, list(sig.classes), sorted(sig.marks), sorted(sig.words),
                           sorted(sig.content)])

    assert Path(module.__file__).resolve().is_relative_to(tree), module.__file__
    data = json.loads(inputs.read_text(encoding="utf-8", errors="surrogatepass"))
    guard = LexicalGuard()
    result: dict = {"sets": {}, "verdicts": {}}
    sigs: dict[str, object] = {}
    for name, prompts in data["sets"].items():
        encoded = []
        for p in prompts:
            sig = sigs.get(p) or guard.signature(p)
            sigs[p] = sig
            encoded.append(canonical(sig))
        result["sets"][name] = encoded
    fresh = LexicalGuard()  # a cold memo gives the same signatures
    assert all(fresh.signature(p) == sig for p, sig in list(sigs.items())[:2000])
    for name, pairs in data["pairs"].items():
        result["verdicts"][name] = [guard.disagreement(sigs[a], sigs[b]) for a, b in pairs]
    out.write_text(json.dumps(result))


def _run(tree: Path, inputs: Path, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "guard_equivalence.py"), "--tree", str(tree), "--inputs", str(inputs),
           "--dump", str(out)]
    subprocess.run(cmd, check=True, cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--synthetic", type=int, default=3000, help="random lexicon mixes (seed 1)")
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump is not None:
        _dump(args.tree, args.inputs, args.dump)
        return 0
    if args.baseline_tree is None:
        ap.error("--baseline-tree is required")
    rows = [json.loads(line) for line in PAIRS.open(encoding="utf-8") if line.strip()]
    rng = random.Random(1)
    sets = {"semantic_pairs a": [r["a"] for r in rows], "semantic_pairs b": [r["b"] for r in rows]}
    sets |= {path.name: _prompts(path) for path in DATA}
    sets["edge cases"] = EDGE
    sets[f"random mixes ({args.synthetic})"] = _random_prompts(rng, args.synthetic)
    everything = sorted({p for prompts in sets.values() for p in prompts})
    pairs = {"labelled pairs": [(r["a"], r["b"]) for r in rows],
             "random pairs (20000)": [(rng.choice(everything), rng.choice(everything)) for _ in range(20000)],
             "edge x edge": [(a, b) for a in EDGE for b in EDGE]}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps({"sets": sets, "pairs": pairs}), encoding="utf-8", errors="surrogatepass")
        base = _run(args.baseline_tree.resolve(), inputs, Path(tmp) / "baseline.json")
        this = _run(ROOT, inputs, Path(tmp) / "this.json")
    bad = False
    total = 0
    for name, got in this["sets"].items():
        ref = base["sets"][name]
        diff = sum(a != b for a, b in zip(ref, got, strict=True))
        total += len(got)
        digest = hashlib.sha256("".join(got).encode()).hexdigest()[:12]
        print(f"  {name}: {len(got)} prompts, signatures differing {diff} (sha256 of all {digest})")
        bad |= bool(diff)
    for name, got in this["verdicts"].items():
        ref = base["verdicts"][name]
        diff = sum(a != b for a, b in zip(ref, got, strict=True))
        agree = sum(v is None for v in got)
        print(f"  {name}: {len(got)} pairs, verdicts differing {diff} (agreeing {agree})")
        bad |= bool(diff)
    print(f"all: {total} signatures; {'FAIL' if bad else 'OK (bit-identical)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

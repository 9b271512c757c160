"""Word lists of the lexical guard (see `gateway.cache.semantic.guard`): plain data, lower-case."""

from __future__ import annotations


def _canon(groups: dict[str, str]) -> dict[str, str]:
    """{"canonical": "alias alias ..."} -> {alias: canonical} (the canonical word maps to itself)."""
    out: dict[str, str] = {}
    for canonical, aliases in groups.items():
        out[canonical] = canonical
        for alias in aliases.split():
            out[alias] = canonical
    return out


NUMBER_WORDS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "half": "0.5", "quarter": "0.25", "twice": "2x", "double": "2x", "triple": "3x", "once": "1x",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th",
    "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th", "single": "1", "pair": "2", "couple": "2",
}
"""Number words and ordinals, written the way the digits would be (`five` and `5` agree)."""

NEGATIONS: frozenset[str] = frozenset(
    "not no never none nothing nobody nowhere neither nor without cannot can't don't doesn't didn't isn't aren't "
    "wasn't weren't won't wouldn't shouldn't couldn't mustn't hasn't haven't hadn't avoid except unless excluding "
    "lacking".split()
)
"""Words that flip or restrict the request; the guard compares how many each text has."""

POLARITY: dict[str, str] = {}
"""word -> "axis+" / "axis-": antonym pairs; two texts must use the same poles of the same axes."""

for _axis, _plus, _minus in [
    ("on", "enable enabled enables enabling activate activated", "disable disabled disables "
     "disabling deactivate deactivated off"),
    ("more", "increase increases increasing more higher larger bigger longer faster greater grow add adding "
     "added append insert", "decrease decreases decreasing reduce lower less fewer smaller shorter slower lesser "
     "shrink remove removing removed delete deleting deleted drop"),
    ("top", "max maximum maximize maximise largest biggest highest", "min minimum minimize minimise "
     "least smallest lowest worst"),
    ("up", "up upper uppercase above upward upwards", "down lower lowercase below downward downwards"),
    ("open", "open opening opened unlock unlocked visible", "close closing closed lock locked hide hidden"),
    ("start", "start starting begin beginning launch", "stop stopping end ending finish terminate kill"),
    ("before", "before prior earlier previous first start", "after later next last"),
    ("true", "true yes valid legal possible safe allowed accept allow", "false invalid illegal impossible "
     "unsafe forbidden reject deny block"),
    ("in", "import imports importing input inbound download downloads incoming receive", "export exports "
     "exporting output outbound upload uploads outgoing send"),
    ("code", "encode encoding encrypt encryption compress compression serialize serialise zip", "decode "
     "decoding decrypt decryption decompress decompression deserialize deserialise unzip"),
    ("asc", "ascending asc increasing", "descending desc decreasing"),
    ("left", "left west", "right east"),
    ("north", "north northern", "south southern"),
    ("buy", "buy buying purchase", "sell selling"),
    ("win", "win winning won gain profit pros advantage advantages benefit benefits", "lose losing lost loss "
     "cons disadvantage disadvantages drawback drawbacks"),
    ("hot", "hot warm warmer heat", "cold cool cooler freeze"),
    ("light", "light bright", "dark dim"),
    ("positive", "positive plus", "negative minus"),
    ("public", "public", "private"),
    ("client", "client frontend", "server backend"),
    ("include", "include including includes", "exclude excluding excludes"),
    ("install", "install installing installed mount subscribe follow login signin", "uninstall uninstalling "
     "uninstalled unmount unsubscribe unfollow logout signout"),
    ("sync", "sync synchronous synchronously blocking", "async asynchronous asynchronously nonblocking"),
    ("like", "love agree pro", "dislike dislikes hate disagree anti oppose"),
    ("push", "push", "pull"),
    ("horizontal", "horizontal horizontally row rows", "vertical vertically column columns"),
    ("forward", "forward forwards", "backward backwards reverse reversed"),
    ("male", "male man men boy boys", "female woman women girl girls"),
    ("simple", "simple simpler easy easier basic beginner", "complex harder difficult advanced expert"),
    ("formal", "formal formally professional", "informal casual casually"),
    ("short", "brief briefly concise concisely short", "detailed lengthy verbose"),
    # an action and its `un-` undoing ("tie" / "untie a tie" differ in the one word the swap check sees added)
    ("tie", "tie ties tied tying", "untie unties untied untying"),
    ("pack", "pack packing packed wrap wrapping wrapped", "unpack unpacking unpacked unwrap unwrapping unwrapped"),
    ("mute", "mute muted muting", "unmute unmuted unmuting"),
    ("redo", "redo", "undo"),
]:
    # an axis word in both lists keeps its first pole ("long" is a position in trading, a length elsewhere)
    for _word in _plus.split():
        POLARITY.setdefault(_word, _axis + "+")
    for _word in _minus.split():
        POLARITY.setdefault(_word, _axis + "-")

ON_VERBS: frozenset[str] = frozenset(
    "turn turns turned turning switch switches switched switching toggle toggled set keep leave left is are be "
    "stays stay put".split()
)
"""`on` counts as the pole of "turn on" only after one of these (otherwise it is the preposition: "a poem on love")."""

LANGUAGES: dict[str, str] = _canon(
    {
        # programming and data languages
        "python": "py python3 python2", "javascript": "js node nodejs ecmascript", "typescript": "ts",
        "java": "", "csharp": "c#", "cpp": "c++", "clang": "", "golang": "", "rust": "", "ruby": "",
        "php": "", "swift": "", "kotlin": "", "scala": "", "haskell": "", "sql": "mysql postgresql postgres "
        "sqlite tsql plsql", "bash": "shell sh zsh", "powershell": "", "matlab": "", "perl": "", "lua": "",
        "dart": "", "elixir": "", "erlang": "", "julia": "", "html": "html5", "css": "scss sass", "json": "",
        "yaml": "yml", "xml": "", "markdown": "md", "latex": "tex", "fortran": "", "cobol": "", "ocaml": "",
        "fsharp": "f#", "clojure": "", "lisp": "", "prolog": "", "solidity": "", "verilog": "", "vhdl": "",
        "assembly": "asm", "rlang": "", "vba": "", "graphql": "", "regex": "regexp", "dockerfile": "",
        "terraform": "hcl", "react": "jsx", "vue": "", "angular": "", "django": "", "flask": "", "pandas": "",
        "numpy": "", "pytorch": "torch", "tensorflow": "", "excel": "", "csv": "",
        # human languages
        "english": "", "french": "", "spanish": "", "german": "", "italian": "", "portuguese": "",
        "chinese": "mandarin cantonese", "japanese": "", "korean": "", "russian": "", "arabic": "",
        "hindi": "", "dutch": "", "swedish": "", "norwegian": "", "danish": "", "finnish": "", "polish": "",
        "turkish": "", "greek": "", "hebrew": "", "vietnamese": "", "thai": "", "indonesian": "", "latin": "",
        "ukrainian": "", "czech": "", "romanian": "", "hungarian": "", "persian": "farsi", "urdu": "",
        "bengali": "", "tamil": "", "swahili": "",
    }
)
"""Programming, data and human languages (and the big frameworks), aliases mapped to one name.

`Go`, `C` and `R` are too ambiguous lower-case; they count only when written `Go`/`C`/`R` mid-sentence."""

CASED_LANGUAGES: dict[str, str] = {"Go": "golang", "C": "clang", "R": "rlang"}

FORMS: dict[str, str] = _canon(
    {
        "haiku": "haikus", "limerick": "limericks", "sonnet": "sonnets", "poem": "poems poetry verse",
        "song": "songs lyrics", "rap": "", "ballad": "", "story": "stories tale", "essay": "essays",
        "article": "articles", "blog": "blogpost", "tweet": "tweets", "email": "emails e-mail",
        "letter": "letters", "memo": "", "report": "", "summary": "summarize summarise summarizing summarized tldr",
        "abstract": "", "outline": "", "table": "tables", "chart": "graph",
        "joke": "jokes", "riddle": "riddles", "pun": "puns", "quote": "quotes", "slogan": "tagline",
        "headline": "title", "speech": "", "dialogue": "conversation", "screenplay": "",
        "bio": "biography", "resume": "cv", "tutorial": "guide", "quiz": "",
        "diagram": "", "proposal": "", "contract": "", "invoice": "",
        "cover": "", "toast": "", "eulogy": "", "apology": "", "complaint": "", "ode": "", "fable": "",
        "mnemonic": "", "acrostic": "", "flashcard": "flashcards",
    }
)
"""What the answer is asked to be: "haiku" and "limerick" never share an answer."""

UNITS: dict[str, str] = _canon(
    {
        "mile": "miles mi", "km": "kilometer kilometers kilometre kilometres kms", "meter": "meters metre "
        "metres", "cm": "centimeter centimeters centimetre centimetres", "mm": "millimeter millimeters",
        "inch": "inches", "foot": "feet ft", "yard": "yards yd", "kg": "kilogram kilograms kilo kilos kgs",
        "gram": "grams", "lb": "lbs pound pounds", "ounce": "ounces oz", "ton": "tons tonne tonnes",
        "liter": "liters litre litres", "ml": "milliliter milliliters millilitre", "gallon": "gallons gal",
        "cup": "cups", "tbsp": "tablespoon tablespoons", "tsp": "teaspoon teaspoons", "celsius": "centigrade",
        "fahrenheit": "", "kelvin": "", "second": "seconds sec secs", "minute": "minutes mins",
        "hour": "hours hr hrs", "day": "days", "week": "weeks", "month": "months", "year": "years yr yrs",
        "decade": "decades", "century": "centuries", "percent": "percentage %", "dollar": "dollars usd $",
        "euro": "euros eur €", "sterling": "gbp £", "yen": "jpy ¥", "bitcoin": "btc", "byte": "bytes",
        "kb": "kilobyte kilobytes", "mb": "megabyte megabytes", "gb": "gigabyte gigabytes", "tb": "terabyte "
        "terabytes", "mph": "", "kph": "kmh", "calorie": "calories kcal", "watt": "watts", "kw": "kilowatt "
        "kilowatts", "kwh": "", "volt": "volts", "amp": "amps ampere", "hz": "hertz", "ghz": "", "mhz": "",
        "psi": "", "bar": "", "knot": "knots", "acre": "acres", "hectare": "hectares", "pixel": "pixels px",
        "degree": "degrees °", "radian": "radians",
    }
)
"""Units (and currencies): "5 miles" and "5 km" differ."""

WH_WORDS: frozenset[str] = frozenset("why when where who whom whose".split())
"""Question words that change the question ("what"/"how"/"which" are left to the other checks)."""

SYNONYMS: dict[str, str] = _canon(
    {
        
        
        "fix": "debug repair correct resolve solve",
        
        "use": "using utilize utilise employ",
        
        "change": "modify alter edit update",
        "find": "locate search get",
        "convert": "transform",
        "switch": "turn toggle",
        "calculate": "compute work figure determine",
        "rewrite": "rephrase paraphrase reword",
        "difference": "differences differ compare comparison versus vs",
        "way": "ways method approach",
        "big": "large huge",
        "small": "little tiny",
        "quick": "fast rapid quickly fastest quicker faster",
        "good": "great nice",
        "mean": "meaning means",
        "work": "works working",
        "happen": "happens occur occurs",
        "build": "built construct constructed building",
        "height": "tall",
        "need": "require requires needs",
        "want": "wish like",
        "start": "begin",
        "code": "function script program programme snippet implementation",
        "write": "wrote written writer author",
        "advise": "advice advisable",
    }
)
"""Request verbs and everyday words that are interchangeable in a prompt (for the word-swap check only)."""

REQUEST_WORDS: frozenset[str] = frozenset(
    "explain describe tell clarify elaborate define write compose create draft generate produce make give provide "
    "craft implement show display help assist suggest recommend list plan outline present share".split()
)
"""How a request is phrased, not what it is about (the word-swap check ignores them; `form` covers the output)."""

STOPWORDS: frozenset[str] = frozenset(
    "a an the and or but if then else of to in on at by for from with about into onto over as is are was were be "
    "been being am do does did doing done have has had having i me my mine we us our you your yours he him his "
    "she her it its they them their this that these those there here what which how can could would should will "
    "shall may might must please kindly just also really very so some any each every all both such own same than "
    "too quite rather let lets let's i'm i'd i'll i've you're it's that's what's how's there's give me tell "
    "show want need like know one thing things something anything way well ok okay hi hello hey thanks thank "
    "pls plz via per out up".split()
) - NEGATIONS - WH_WORDS
"""Words the word-swap check ignores (negations and wh-words are compared on their own)."""

COURTESIES: frozenset[str] = frozenset("hi hello hey thanks thank".split())
"""Greetings and thanks among the stop words: never marks (a capitalised "Thanks" is no entity), but content words
for the word-swap check inside a sentence, where they can be what is asked about ("how do I say thank you" / "say
sorry in Japanese", "say hello" / "say goodbye in French"); opening a sentence ("Hello, what is ...", "Thanks in
advance.") they are only polite and stay out. `please` and `ok` stay stop words: as content they turned two of the
pair set's paraphrases into swaps ("Translate this sentence to Spanish: ..." / "Please translate to Spanish: ...")."""



QUALIFIERS: tuple[frozenset[str], ...] = tuple(
    frozenset(group.split("/"))
    for group in (
        "vegetarian/vegetarians vegan/vegans keto paleo halal kosher gluten dairy lactose sugar/sugarless eggless "
        "meatless beginner/beginners kid/kids/child/children toddler/toddlers teen/teens/teenager/teenagers "
        "baby/babies pregnant/pregnancy elderly/senior/seniors expert/experts advanced legal/legally "
        "illegal/illegally safe/safely/safety cheap/cheapest/budget/affordable healthy/healthier/healthiest spicy "
        "mild raw organic homemade offline wireless portable remote/remotely local/locally read/reads/reading "
        "dog/dogs/puppy/puppies cat/cats/kitten/kittens pet/pets "
        "vs/versus/compare/compared/comparing/comparison/difference/differences/differ/differs capita"
    ).split()
)
"""Words that narrow what is asked ("a vegetarian lasagna recipe", "for beginners", "is it legal", "a remote
branch", "should my dog drink"; `read`, whose opposite `write` is a request word the swap check ignores; a
comparison: "inner join vs outer join" / "inner join" asks for two things; "GDP per capita"), in groups of
forms that mean the same: a prompt with a word of a group and a prompt with none of it do not agree, even when
nothing else differs (the word-swap check needs a word changed on both sides)."""


DIRECTIONS: dict[str, int] = {
    **dict.fromkeys(
        "to into onto toward towards than over against per before instead minus divided beat beats beating beaten "
        "defeat defeats defeated defeating outperform outperforms outperformed surpass surpasses surpassed overtake "
        "overtakes overtook overtaken precede precedes preceded exceed exceeds exceeded".split(),
        1,
    ),
    **dict.fromkeys("from after".split(), -1),
}
"""Words whose two sides are not interchangeable (the guard's order check): 1 when the side before the word is the
first of the relation ("celsius to fahrenheit", "Germany beat Brazil", "an elephant bigger than a mouse",
"tabs instead of spaces"), -1 when the side after it is ("a string from an integer" is "an integer to a string",
"B after A" is "A before B"). Left out: `vs`/`versus`/`and`/`with` ("Python vs Java" asks what "Java vs Python"
asks) and `in`/`of`/`for` ("5 miles in km" is "5 miles to km" but "how many feet in a mile" is "a mile in feet")."""

PASSIVES: frozenset[str] = frozenset(
    "beaten defeated outperformed surpassed overtaken preceded exceeded".split()
)
"""Participles whose direction a following `by` reverses ("Brazil was beaten by Germany" is "Germany beat
Brazil")."""

"""Instruction cues for the output-length trees: what the prompt asks for, as a fixed vector of numbers.

Sits under the boosted trees of the proxy model (`trees`, `model`) and their trainer
(`sloguard.predictor.training.proxy`); both must read a prompt the same way, so this module is the single
definition. Pure and cheap: it reads only the prompt's head (`HEAD_CHARS`) and tail (`TAIL_CHARS`), where
the request sits ("write a story about ...", "... Answer yes or no."), with a handful of compiled regexes.

Cues are 0/1 flags for task kinds that set the answer's length (a list, an explanation, a story or essay,
code, a one-word or yes/no answer, a translation, a rewrite, a summary, a role-play set-up, ...), found by
looking the text's words and two- and three-word phrases up in sets (one pass over the words, never a regex
per cue), plus a
requested size: "10 ideas", "in 3 sentences", "500 words", turned into an estimate of tokens by a rough
tokens-per-unit (a word 1.3 tokens, a sentence 25, a paragraph 100, an item of a list 30). No text gives
a vector of zeros with `has_text` 0.
"""

import math
import re

HEAD_CHARS = 1500
TAIL_CHARS = 400

# Each cue fires when any of its phrases (one to three words) occurs among the words of the text; a
# phrase ending in "^" must be the text's first word(s).
_FLAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("list", ("list", "enumerate", "bullet", "bullets", "bullet points", "outline", "top")),
    ("explain", ("explain", "describe", "elaborate", "discuss", "what are the", "tell me about")),
    (
        "long_form",
        (
            "story",
            "essay",
            "article",
            "blog",
            "poem",
            "song",
            "lyrics",
            "script",
            "novel",
            "chapter",
            "speech",
            "report",
        ),
    ),
    ("write", ("write^", "compose^", "create^", "draft^", "generate^", "make^", "please write^")),
    ("letter", ("email", "e mail", "letter", "cover letter", "message", "tweet", "post", "caption")),
    (
        "code",
        (
            "code",
            "function",
            "python",
            "javascript",
            "java",
            "sql",
            "html",
            "css",
            "regex",
            "implement",
            "program",
            "class",
            "api",
            "bug",
            "error",
            "compile",
            "typescript",
            "react",
        ),
    ),
    ("one_word", ("one word", "single word", "a word", "one number", "only the answer", "only the number")),
    ("yes_no", ("yes or no", "true or false", "yes no", "true false")),
    ("choice", ("choose", "select", "which one", "which of", "options", "option")),
    ("classify", ("classify", "categorize", "categorise", "label", "sentiment", "detect", "identify")),
    ("translate", ("translate", "translation", "in english", "in french", "in spanish", "in chinese")),
    (
        "rewrite",
        ("rewrite", "paraphrase", "rephrase", "correct", "proofread", "grammar", "improve", "edit", "polish"),
    ),
    ("summarize", ("summarize", "summarise", "summary", "tl dr", "tldr", "key points", "main points")),
    (
        "brief",
        (
            "brief",
            "briefly",
            "short",
            "concise",
            "shortly",
            "in a sentence",
            "one sentence",
            "one line",
            "quick",
        ),
    ),
    (
        "detailed",
        ("detail", "detailed", "in depth", "comprehensive", "thorough", "step by step", "elaborate"),
    ),
    ("how", ("how^", "why^", "how do", "how can", "how to", "how does", "how should")),
    ("what", ("what^", "who^", "when^", "where^", "which^", "is^", "are^", "does^", "do^", "can^")),
    ("roleplay", ("act as", "to act as", "you are a", "pretend", "roleplay", "role play", "from now on")),
    ("continue", ("continue^", "go on^", "keep going^", "more^")),
    ("table", ("table", "json", "csv", "markdown", "format")),
    ("compare", ("compare", "comparison", "versus", "vs", "difference between", "pros and cons")),
    (
        "plan",
        ("plan", "itinerary", "schedule", "recipe", "guide", "tutorial", "course", "curriculum", "strategy"),
    ),
    (
        "ideas",
        ("ideas", "suggest", "suggestions", "examples", "tips", "ways", "names", "titles", "recommend"),
    ),
    ("math", ("calculate", "solve", "compute", "equation", "how many", "how much", "sum of")),
    ("greeting", ("hi^", "hello^", "hey^", "thanks^", "thank you^", "good morning^", "good evening^")),
    ("define", ("define", "definition", "meaning of", "what does")),
)
_MAX_PHRASE_WORDS = 3
_WORD = re.compile(r"[a-z]+|[0-9]+")
HEAD_WORDS = 250
TAIL_WORDS = 70
_UNITS: dict[str, float] = {
    "word": 1.3,
    "words": 1.3,
    "sentence": 25.0,
    "sentences": 25.0,
    "line": 12.0,
    "lines": 12.0,
    "paragraph": 100.0,
    "paragraphs": 100.0,
    "page": 500.0,
    "pages": 500.0,
}
_ITEM_TOKENS = 30.0
_ITEM_UNITS = frozenset(
    {
        "ideas", "ways", "tips", "examples", "questions", "names", "points", "items", "steps", "reasons",
        "titles", "options", "facts", "things", "sites", "books", "places", "slogans", "taglines",
        "headlines", "bullets", "products", "quotes", "jokes", "songs", "movies", "keywords", "hashtags",
        "tweets", "variations", "alternatives",
    }
)  # fmt: skip
_ANY_UNIT = _ITEM_UNITS | frozenset(_UNITS)
_UNIT_LOOKAHEAD = 3  # "10 creative blog ideas": the unit may follow up to two other words
_UPPER = re.compile(r"[A-Z]")
_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "fifty": 50,
    "hundred": 100,
}
CUE_NAMES: tuple[str, ...] = (
    *(f"head_{name}" for name, _ in _FLAGS),
    *(f"tail_{name}" for name, _ in _FLAGS),
    "code_fence",
    "arithmetic",
    "requested_log_tokens",
    "requested_items",
    "questions",
    "log_sentences",
    "ends_colon",
    "upper_share",
    "digit_share",
    "non_ascii_share",
    "has_text",
)
CUE_COUNT = len(CUE_NAMES)


def _requested(words: list[str]) -> tuple[float, float]:
    """log1p of the largest requested size in tokens, and log1p of the number of items asked for."""
    best_tokens, items = 0.0, 0.0
    if _ANY_UNIT.isdisjoint(words):
        return 0.0, 0.0
    for i, word in enumerate(words):
        count = float(word) if word.isdigit() and len(word) <= 4 else float(_NUMBER_WORDS.get(word, 0))
        if count <= 0:
            continue
        for unit in words[i + 1 : i + 1 + _UNIT_LOOKAHEAD]:
            per = _UNITS.get(unit)
            if per is None and unit in _ITEM_UNITS:
                items = max(items, count)
                per = _ITEM_TOKENS
            if per is not None:
                best_tokens = max(best_tokens, count * per)
                break
    return math.log1p(best_tokens), math.log1p(items)


_ARITHMETIC = re.compile(r"[0-9]\s*[-+*/^x]\s*[0-9]")


_STARTS = frozenset(
    phrase.rstrip("^").split()[0] for _, phrases in _FLAGS for phrase in phrases if " " in phrase
)


def _phrases(words: list[str]) -> set[str]:
    """The words, the runs of two and three words that start like a cue phrase, and the first words marked
    with "^"."""
    found = set(words)
    for i in [i for i, word in enumerate(words) if word in _STARTS]:
        found.add(" ".join(words[i : i + 2]))
        found.add(" ".join(words[i : i + _MAX_PHRASE_WORDS]))
    found.update(" ".join(words[:n]) + "^" for n in range(1, _MAX_PHRASE_WORDS + 1) if len(words) >= n)
    return found


def _flags(words: list[str]) -> list[float]:
    found = _phrases(words)
    return [0.0 if found.isdisjoint(phrases) else 1.0 for _, phrases in _FLAGS]


def cue_vector(prompt_text: str | None) -> tuple[float, ...]:
    """`CUE_COUNT` numbers for one prompt, in the order of `CUE_NAMES`."""
    if prompt_text is None:
        return (0.0,) * CUE_COUNT
    head = prompt_text[:HEAD_CHARS].lower()  # never the whole text: a pasted document can be 100k characters
    tail = prompt_text[-TAIL_CHARS:].lower()
    head_words = _WORD.findall(head)[:HEAD_WORDS]
    tail_words = _WORD.findall(tail)[-TAIL_WORDS:]
    flags = _flags(head_words) + _flags(tail_words)
    flags += [1.0 if "```" in head or "```" in tail else 0.0, 1.0 if _ARITHMETIC.search(head) else 0.0]
    requested_tokens, requested_items = _requested(head_words + tail_words)
    sample = prompt_text[:HEAD_CHARS] + prompt_text[-TAIL_CHARS:]
    n = max(1, len(sample))
    upper = len(_UPPER.findall(sample)) / n
    digits = sum(sample.count(d) for d in "0123456789") / n
    non_ascii = (len(sample) - len(sample.encode("ascii", "ignore"))) / n
    sentences = head.count(". ") + head.count("? ") + head.count("! ") + head.count("\n") + 1
    return (
        *flags,
        requested_tokens,
        requested_items,
        float(min(head.count("?") + tail.count("?"), 20)),
        math.log1p(sentences),
        1.0 if tail.rstrip().endswith(":") else 0.0,
        upper,
        digits,
        non_ascii,
        1.0,
    )

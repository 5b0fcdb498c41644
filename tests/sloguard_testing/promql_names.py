"""Extracts the series selectors (metric name and matched labels) from PromQL text, for the query tests.

No PromQL parser is packaged for Python, so this is a small tokenizer that understands enough of the
language to tell a metric name from everything else that looks like an identifier: function and
aggregation names (followed by `(` or by `by`/`without`), label names inside `{...}` and in
`by`/`without`/`on`/`ignoring`/`group_left`/`group_right` lists, durations inside `[...]`, keywords,
number literals (`inf`, `nan`, `1e3`, `0x1f`, `5m`), string literals and Grafana variables (`$pool`,
`${pool}`, `$__rate_interval`). `{__name__="x"}` selects the metric `x`. Grafana's
`label_values(selector, label)` template query is accepted too (its first argument is a selector).

Used by tests/unit/chart/test_promql_metric_names.py; tested in tests/unit/test_promql_names.py.
"""

import re
from dataclasses import dataclass, field

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
GROUPING_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"}) | GROUPING_KEYWORDS
NUMBER_WORDS = frozenset({"inf", "nan"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9_]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@,(){}\[\]:])
    """,
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    """The text holds a character or bracket structure this tokenizer does not understand."""


@dataclass(frozen=True)
class Token:
    kind: str  # string, variable, number, ident, op
    text: str
    offset: int


@dataclass
class Selector:
    """One vector selector: its metric name (None for `{...}` without `__name__`) and its label matchers."""

    metric: str | None
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (operator, value)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise PromQLSyntaxError(f"unexpected {text[pos]!r} at offset {pos} in {text!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return body if literal[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def selectors(text: str) -> list[Selector]:
    """Every vector selector in `text`, in order; raises PromQLSyntaxError on unbalanced brackets."""
    tokens = tokenize(text)
    found: list[Selector] = []
    stack: list[str] = []  # open brackets, with "L" for a grouping keyword's label list
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "op" and tok.text in "([{":
            stack.append(tok.text)
            if tok.text == "{":  # a selector without a name before it: {__name__="x", ...}
                selector, i = _matchers(tokens, i, None, text)
                stack.pop()
                found.append(selector)
                continue
        elif tok.kind == "op" and tok.text in ")]}":
            if not stack or {"(": ")", "L": ")", "[": "]", "{": "}"}[stack[-1]] != tok.text:
                raise PromQLSyntaxError(f"unbalanced {tok.text!r} at offset {tok.offset} in {text!r}")
            stack.pop()
        elif tok.kind == "ident" and stack and stack[-1] in "L[":
            pass  # a label name in by (...) or a duration unit in [...]
        elif tok.kind == "ident":
            word = tok.text.lower()
            if word in GROUPING_KEYWORDS and nxt is not None and nxt.text == "(":
                stack.append("L")
                i += 2
                continue
            is_call = nxt is not None and nxt.text == "("
            is_aggregation = (
                word in AGGREGATIONS and nxt is not None and nxt.text.lower() in ("by", "without")
            )
            if not (is_call or is_aggregation or word in KEYWORDS or word in NUMBER_WORDS):
                if nxt is not None and nxt.text == "{":
                    stack.append("{")
                    selector, i = _matchers(tokens, i + 1, tok.text, text)
                    stack.pop()
                    found.append(selector)
                    continue
                found.append(Selector(tok.text))
        i += 1
    if stack:
        raise PromQLSyntaxError(f"unclosed {stack[-1]!r} in {text!r}")
    return found


def _matchers(tokens: list[Token], brace: int, metric: str | None, text: str) -> tuple[Selector, int]:
    """Parses `{label op "value", ...}` starting at the `{` token; returns the selector and the next index."""
    selector = Selector(metric)
    i = brace + 1
    while i < len(tokens) and tokens[i].text != "}":
        if tokens[i].text == ",":
            i += 1
            continue
        if i + 2 >= len(tokens):
            break
        label, op, value = tokens[i], tokens[i + 1], tokens[i + 2]
        if label.kind not in ("ident", "string") or op.text not in ("=", "!=", "=~", "!~"):
            raise PromQLSyntaxError(f"bad label matcher at offset {label.offset} in {text!r}")
        if value.kind not in ("string", "variable"):
            raise PromQLSyntaxError(f"label value must be a string at offset {value.offset} in {text!r}")
        name = _unquote(label.text) if label.kind == "string" else label.text
        literal = _unquote(value.text) if value.kind == "string" else value.text
        if name == "__name__" and op.text == "=":
            selector.metric = literal
        else:
            selector.matchers[name] = (op.text, literal)
        i += 3
    if i >= len(tokens):
        raise PromQLSyntaxError(f"unclosed '{{' in {text!r}")
    return selector, i + 1


_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$", re.DOTALL
)


def template_query_selectors(query: str) -> list[Selector]:
    """Selectors in a Grafana Prometheus template query: `label_values(sel, label)` or plain PromQL."""
    match = _LABEL_VALUES.match(query)
    if match:
        return selectors(match.group("selector"))
    if re.match(r"^\s*label_values\(\s*[a-zA-Z_]\w*\s*\)\s*$", query):
        return []  # label_values(label): every series, no metric named
    return selectors(query)


def metric_names(text: str) -> set[str]:
    return {s.metric for s in selectors(text) if s.metric is not None}

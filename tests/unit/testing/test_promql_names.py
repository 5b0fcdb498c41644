"""The PromQL selector extractor (sloguard_testing/promql_names.py): metric names are told apart from
functions, aggregations, label names, durations, keywords, literals and Grafana variables; bad bracket
structure is an error, never a silently short list."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sloguard_testing.promql_names import (
    PromQLSyntaxError,
    metric_names,
    selectors,
    template_query_selectors,
)

CASES = [
    ("up", {"up"}),
    ("vllm:num_requests_running", {"vllm:num_requests_running"}),
    ('sum by (pool, slo_class) (rate(a_total{pool=~"$pool"}[5m]))', {"a_total"}),
    ("sum(rate(a[5m])) by (le)", {"a"}),
    ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ("a / on(pod) group_left(node) b", {"a", "b"}),
    ("a and ignoring(x) b or c unless d", {"a", "b", "c", "d"}),
    ("a > bool 0.5", {"a"}),
    ("a offset 5m", {"a"}),
    ("a @ start()", {"a"}),
    ("max_over_time(a[1h:5m])", {"a"}),
    ('count_values("v", a)', {"a"}),
    ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
    ('{__name__="x", job="j"}', {"x"}),
    ('{__name__=~"x.*"}', set()),
    ("topk(3, a) + Inf - NaN * 1e3 + 0x1f", {"a"}),
    ("sum without (instance) (a)", {"a"}),
    ("sum(a) without (instance)", {"a"}),
    ('a{l="by (x)"} # a comment naming b', {"a"}),
    ('max(timestamp(a{p="q\\"r"}))', {"a"}),
    ('sum by (pod) (x{pool="p"}) + sum by (pod) (y{pool="p"})', {"x", "y"}),
    ("absent(a) * ${factor}", {"a"}),
    ("group(a) by (by)", {"a"}),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
def test_metric_names(query: str, expected: set[str]) -> None:
    assert metric_names(query) == expected


def test_matchers_are_kept_with_their_operator() -> None:
    (selector,) = selectors('rate(x{pool=~"$pool", namespace="ns", outcome!="cancelled"}[1m])')
    assert selector.metric == "x"
    assert selector.matchers == {
        "pool": ("=~", "$pool"),
        "namespace": ("=", "ns"),
        "outcome": ("!=", "cancelled"),
    }


@pytest.mark.parametrize(
    "bad",
    ["sum(a", "a)", 'a{b="c"', "rate(a[5m)", "a{b}", "a{b=c}", "a ? b", "sum(a]"],
)
def test_bad_structure_is_an_error(bad: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        selectors(bad)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("label_values(sloguard_ready, namespace)", {"sloguard_ready"}),
        ('label_values(sloguard_ready{namespace=~"$namespace"}, pool)', {"sloguard_ready"}),
        ("label_values(pool)", set()),
        ("up", {"up"}),
    ],
)
def test_grafana_template_queries(query: str, expected: set[str]) -> None:
    assert {s.metric for s in template_query_selectors(query)} == expected


names = st.from_regex(r"[a-z_][a-z0-9_:]{0,12}", fullmatch=True).filter(
    lambda n: (
        n not in {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
        and n not in {"unless", "bool", "offset", "atan2", "inf", "nan"}
    )
)
labels = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "__name__")
values = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=8)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    metric=names,
    matchers=st.dictionaries(labels, values, max_size=3),
    function=st.sampled_from(["", "rate", "sum", "max_over_time", "histogram_quantile(0.9, "]),
    grouping=st.lists(labels, max_size=3),
)
def test_a_built_selector_is_found_with_its_matchers(
    metric: str, matchers: dict[str, str], function: str, grouping: list[str]
) -> None:
    body = ",".join(f"{k}={_quoted(v)}" for k, v in matchers.items())
    query = f"{metric}{{{body}}}" if matchers else metric
    if function in ("rate", "max_over_time"):
        query = f"{function}({query}[5m])"
    elif function == "sum":
        query = f"sum by ({', '.join(grouping)}) ({query})"
    elif function:
        query = f"{function}{query})"
    (selector,) = selectors(query)
    assert selector.metric == metric
    assert selector.matchers == {k: ("=", v) for k, v in matchers.items()}

"""`Children`: the labelled series Accounting writes, looked up once per label tuple, are prometheus-client's own
children (the exposition is the one `labels()` gives), and the remembered tuples are bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metric_children import Children


def test_a_child_is_the_one_labels_gives_and_values_are_label_strings() -> None:
    registry = CollectorRegistry()
    requests = Counter("r_total", "r", ["tier", "status", "reason"], registry=registry)
    children = Children(requests)
    first = children("local", 200, "pinned")
    assert first is requests.labels("local", "200", "pinned")  # an int status is the label "200", as labels() has it
    assert children("local", 200, "pinned") is first
    assert children("local", "200", "pinned") is first
    first.inc()
    children("local", 200, "pinned").inc(2)
    assert registry.get_sample_value("r_total", {"tier": "local", "status": "200", "reason": "pinned"}) == 3.0


def test_remembered_tuples_are_bounded_and_later_ones_still_count() -> None:
    registry = CollectorRegistry()
    overhead = Histogram("o_seconds", "o", ["tier"], buckets=(0.001, 0.01), registry=registry)
    children = Children(overhead, max_children=2)
    for tier in ("a", "b", "c", "c"):
        children(tier).observe(0.005)
    assert len(children._children) == 2  # "c" is looked up by labels() each time, never remembered
    assert registry.get_sample_value("o_seconds_count", {"tier": "c"}) == 2.0
    assert registry.get_sample_value("o_seconds_bucket", {"tier": "a", "le": "0.01"}) == 1.0
    assert registry.get_sample_value("o_seconds_bucket", {"tier": "a", "le": "0.001"}) == 0.0


def test_the_exposition_is_the_one_labels_gives() -> None:
    def exposition(write: str) -> bytes:
        registry = CollectorRegistry()
        tokens = Counter("t_total", "t", ["tier", "model"], registry=registry)
        children = Children(tokens)
        for tier, model, n in (("local", "qwen", 12), ("upstream", "gpt-4o", 6), ("local", "qwen", 3)):
            (children(tier, model) if write == "children" else tokens.labels(tier, model)).inc(n)
        return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)

    assert exposition("children") == exposition("labels") == (
        b"# HELP t_total t\n# TYPE t_total counter\n"
        b't_total{model="qwen",tier="local"} 15.0\nt_total{model="gpt-4o",tier="upstream"} 6.0'
    )

"""Generated request bodies against a running gateway: never a 5xx the gateway made, every error OpenAI-shaped.

Bodies mix valid and wrongly-typed known fields with arbitrary unknown ones; bounded example counts.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningGateway

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=50)})
image_part = st.fixed_dictionaries(
    {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.text(max_size=30)})}
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.text(max_size=200) | st.lists(text_part | image_part, min_size=1, max_size=3),
    },
    optional={"name": st.text(min_size=1, max_size=10)},
)
valid_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "upstream", "auto", "local", "*"]),
        "messages": st.lists(message, min_size=1, max_size=4),
    },
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": st.integers(1, 4),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.integers(1, 2),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "stop": st.text(min_size=1, max_size=5) | st.lists(st.text(min_size=1, max_size=5), max_size=4),
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
        "logprobs": st.booleans(),
        "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    },
)


@st.composite
def corrupted(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one field (known or not, top level or in a message) replaced by anything."""
    body = draw(valid_bodies)
    where = draw(st.sampled_from(["field", "message", "drop"]))
    if where == "message":
        i = draw(st.integers(0, len(body["messages"]) - 1))
        key = draw(st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "extra"]))
        body["messages"][i] = {**body["messages"][i], key: draw(json_values)}
    elif where == "drop":
        body.pop(draw(st.sampled_from(sorted(body))))
    else:
        key = draw(st.sampled_from([*sorted(body), "stream_options", "max_tokens", "n", "seed", "stop", "tools", "x"]))
        body[key] = draw(json_values)
    return body


bodies = st.one_of(valid_bodies, corrupted(), json_values)


def assert_sane(response: httpx.Response) -> None:
    # 502/504 are the upstream's failures passed on; a gateway-made 500 is a bug.
    assert response.status_code < 500 or response.status_code in (502, 504), response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["message"]
        assert "sk-upstream-secret" not in response.text


@pytest.fixture(scope="module")
def http(gateway: RunningGateway) -> Any:
    with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
        yield client


@SETTINGS
@given(body=bodies)
def test_generated_bodies_to_the_upstream_tier(http: httpx.Client, body: Any) -> None:
    response = http.post("/chat/completions", content=json.dumps(body), headers={"x-gateway-route": "upstream"})
    assert_sane(response)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies.filter(lambda b: isinstance(b, dict)).map(lambda b: {**b, "max_tokens": 2, "stream": False}))
def test_generated_bodies_to_the_local_tier(http: httpx.Client, body: dict[str, Any]) -> None:
    response = http.post("/chat/completions", content=json.dumps(body), headers={"x-gateway-route": "local"})
    assert_sane(response)


def test_the_gateway_is_still_healthy_after_the_fuzzing(http: httpx.Client) -> None:
    ok = http.post("/chat/completions", json={"model": "upstream", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200

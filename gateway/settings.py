"""Gateway settings: typed msgspec structs, loaded from defaults < YAML file < environment < CLI flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from gateway.redis_url import RedisUrlError, redis_target

ENV_PREFIX = "SLM_GATEWAY_"


class SettingsError(ValueError):
    """A setting is wrong; the message is one line that says which and why."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class UpstreamSettings(_Section):
    """The upstream (LLM) tier: any OpenAI-compatible base URL (see README, "Upstream base URLs")."""

    url: str | None = None
    api_key: str | None = None
    """Prefer the SLM_GATEWAY_UPSTREAM_API_KEY environment variable or `api_key_file` to a flag or config file."""
    api_key_file: str | None = None
    """A file holding the upstream API key (a mounted secret); read once at start, surrounding whitespace dropped."""
    max_response_bytes: int = 32 * 1024 * 1024
    """Largest upstream (non-streamed) answer accepted; a larger one is a 502 `upstream_response_too_large`."""
    auth_header: Literal["authorization", "api-key"] = "authorization"
    """How the key is sent: `Authorization: Bearer KEY` (OpenAI, Gemini, DeepSeek, ...) or `api-key: KEY` (Azure)."""
    models_ttl_seconds: float = 300.0
    """How long the upstream's own `/models` list is kept before it is fetched again."""
    default_model: str = "gpt-4o-mini"
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    max_connections: int = 256
    client: Literal["aiohttp", "httpx"] = "aiohttp"
    """The HTTP client library behind the connection pool (see gateway/tiers/transport.py)."""


class ServerSettings(_Section):
    """How clients may send requests: limits enforced by the HTTP protocol layer (gateway/http_guard.py)."""

    max_header_bytes: int = 64 * 1024
    """Request line plus headers; a larger head is answered 431 and the connection closed."""
    header_timeout_seconds: float = 10.0
    """Time a connection may take to send a request's head (from connecting, or from its first byte)."""
    body_timeout_seconds: float = 60.0
    """Time a request may take to send its body once its head arrived."""
    keep_alive_seconds: float = 5.0
    """Idle time after a response before a keep-alive connection is closed."""
    max_concurrency: int | None = None
    """Connections + requests in flight beyond which new requests get a 503 (uvicorn's limit_concurrency)."""
    readiness_cache_seconds: float = 5.0
    """How long `/readyz` reuses its upstream probe and Redis ping (N probes in that time: one upstream request)."""


class LocalSettings(_Section):
    """The local (SLM) tier: llama.cpp in-process."""

    model_path: str | None = None
    model_name: str = ""
    """The model id local answers carry (`model`, `x-gateway-model`). Empty: the GGUF's own `general.name`
    (the bundled model: `Qwen2.5-Coder-0.5B-Instruct`), else the file's name. `local` is always an alias."""
    context_size: int = 4096
    max_concurrency: int = 1
    max_queue: int = 16
    threads: int | None = None
    """llama.cpp threads; default half the cores (see gateway/tiers/local.py:default_threads)."""
    max_tokens_default: int = 512
    spill_to_upstream: bool = True
    """When the local queue is full or the prompt is too long, send the request upstream (if one exists)."""


TIER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
"""What an SLM tier may be called (its name is a routing target, a route header value and a metrics label)."""
RESERVED_TIER_NAMES = frozenset({"local", "upstream", "auto", "reject", "cache", "none", "rejected"})
SLM_TIER_FEATURES = frozenset({"tools", "response_format", "images", "n", "logprobs"})  # gateway.tiers.base


class SlmTierSettings(_Section):
    """One more small-model tier, named by its key in `slm_tiers`: a GGUF run in-process (`model_path`; its
    weights are memory-mapped, so tiers of one file share them) or a remote OpenAI-compatible SLM server (`url`:
    llama.cpp server, vLLM, Ollama). Costed like the `local` tier; policies route to it by name."""

    model_path: str | None = None
    url: str | None = None
    """Base URL of a remote server, such as http://slm:8080/v1."""
    model_name: str | None = None
    """The model it serves (sent to a remote server and reported in answers); default the tier's name."""
    api_key: str | None = None
    features: list[str] | None = None
    """A remote tier: the optional request features (tools, response_format, images, n, logprobs) it honours;
    default none, so such requests never reach it. An in-process tier honours tools and response_format."""
    context_size: int = 4096
    max_concurrency: int = 1
    max_queue: int = 16
    threads: int | None = None
    max_tokens_default: int = 512
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    max_connections: int = 64


class CorsSettings(_Section):
    """CORS for browser apps: off unless origins are given."""

    allow_origins: list[str] = msgspec.field(default_factory=list)
    """Origins allowed to call the gateway from a browser (`*` for any); empty: CORS off."""
    allow_credentials: bool = False
    max_age: int = 600


class SemanticCacheSettings(_Section):
    """The semantic cache (docs/semantic-cache.md): a paraphrase of a cached prompt, in the same scope, gets its answer."""

    enabled: bool = False
    """Build the semantic layer (loads the bundled embedder); requests still opt in (see `default`)."""
    default: bool = False
    """Semantic lookups for every cacheable request; otherwise only for `tenants`, policy rules with
    `cache: semantic` and requests with `x-gateway-cache: semantic`."""
    tenants: list[str] = msgspec.field(default_factory=list)
    """Tenants (as logged: `t-...`) whose cacheable requests get semantic lookups by default."""
    threshold: float | None = None
    """Cosine similarity a candidate needs; None: the embedder's calibrated one (`slm-gateway cache calibrate`)."""
    max_turns: int = 1
    max_chars: int = 2000
    candidates: int = 4
    deadline_seconds: float = 0.02
    """A lookup (embed, search, entry read) or an index write that takes longer is a miss, never waited on."""
    max_rows_per_scope: int = 20_000
    max_vectors: int = 200_000
    """Vectors held in-process in total (the in-process index, or the Redis index's mirrors)."""
    ann_min_rows: int = 32_768
    """A scope this large is searched through an approximate index (faiss IVF, built in a worker thread) instead
    of an exact scan; 0: always the exact scan (docs/semantic-cache.md, "Scale")."""
    sync_interval_seconds: float = 0.1
    """Redis index: a replica's mirror of a scope caught up this recently is scanned without a round trip (other
    replicas' new entries reach it within this interval); 0: a round trip on every lookup."""


class CacheSettings(_Section):
    """Response cache: Redis when a URL is given, else an in-process LRU."""

    redis_url: str | None = None
    ttl_seconds: int = 3600
    max_entry_bytes: int = 1_048_576
    max_memory_entries: int = 10_000
    max_memory_bytes: int = 64 * 1024 * 1024
    """In-process cache only: the most bytes (keys + answers) it holds; least recently used entries go first."""
    enabled: bool = True
    tenant_header: str | None = None
    """Header that names the tenant; by default the tenant is derived from the caller's gateway key."""
    cache_nondeterministic: bool = False
    """Also cache requests with temperature > 0 and no seed."""
    timeout_seconds: float = 0.05
    """Redis connect and socket timeout: a slow Redis is treated as a miss, never waited on."""
    lock_timeout_seconds: float = 30.0
    """How long identical concurrent misses wait for the first one before asking the tier themselves."""
    key_prefix: str = "slmgw:cache:v1"
    """Prefix of every cache key (gateways that share a prefix and a Redis share entries)."""
    semantic: SemanticCacheSettings = msgspec.field(default_factory=SemanticCacheSettings)


class UpstreamPrice(_Section):
    """Price of an upstream model in US dollars per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0


def _default_prices() -> dict[str, UpstreamPrice]:
    return {
        "gpt-4o": UpstreamPrice(input_per_million=2.5, output_per_million=10.0),
        "gpt-4o-mini": UpstreamPrice(input_per_million=0.15, output_per_million=0.6),
    }


class CostSettings(_Section):
    """Cost table: what upstream tokens cost, and what local generation costs."""

    local_per_million_tokens: float = 0.0
    local_per_hour: float = 0.0
    upstream: dict[str, UpstreamPrice] = msgspec.field(default_factory=_default_prices)


class AutoRetrainSettings(_Section):
    """`learning.auto_retrain`: on a schedule, in the background (subprocesses, never in a request path), train a
    candidate router on `data` + the collected labels and promote it when it is not worse (`classifier promote`;
    the replaced model is kept for `slm-gateway classifier rollback`), then reload every worker."""

    interval_seconds: float = 0.0
    """Seconds between runs; 0 = off."""
    data: list[str] = msgspec.field(default_factory=list)
    """Benchmark data files trained on besides the labels (e.g. shared/data/routing/dev.jsonl); may be empty."""
    min_new_labels: int = 100
    """A run trains only when at least this many label rows arrived since the last run that trained."""
    work_dir: str | None = None
    """Where the label snapshot, the candidate and the run state go (shared by the workers of one host); default
    `<tmp>/slm-gateway-retrain`."""
    timeout_seconds: float = 3600.0
    """A train or promote step still running after this long is killed (the run counts as failed)."""


class LearningSettings(_Section):
    """Shadow judging and explicit feedback: label rows for retraining the router (see gateway/learning)."""

    shadow_rate: float = 0.0
    """Share of answered requests (0..1) whose other tier's answer is obtained and judged after the response."""
    judge_model: str | None = None
    """Upstream model that grades both answers; default `upstream.default_model`."""
    max_judge_dollars_per_day: float = 1.0
    """Cap on what shadow judging spends per UTC day (judge calls and upstream shadow answers), in US dollars."""
    labels_path: str | None = None
    """JSONL file the label rows are appended to (used when no Redis is configured, or when it is down)."""
    redis_stream: str = "slmgw:labels:v1"
    """With `cache.redis_url`: the Redis stream every replica appends label rows to."""
    stream_max_len: int = 1_000_000
    feedback: bool = False
    """Accept `POST /v1/feedback` (remembers recent requests: in Redis when configured)."""
    recent_requests: int = 10_000
    """How many recent requests are remembered for feedback (per process; in Redis, for `recent_ttl_seconds`)."""
    recent_ttl_seconds: int = 86_400
    queue_size: int = 64
    """Shadow jobs waiting; a full queue drops (counted)."""
    workers: int = 1
    """Concurrent shadow jobs (each: other tier's answer, then the judge)."""
    local_concurrency: int = 1
    """Concurrent shadow generations on the local tier (they only start when the local tier is idle)."""
    shadow_max_tokens: int = 256
    judge_max_tokens: int = 64
    max_prompt_chars: int = 32_768
    """Requests whose last user prompt is longer are neither remembered nor shadowed (bounds memory)."""
    opt_out_header: str = "x-gateway-learning"
    """A request with this header set to off/no/0/false is never shadowed nor remembered."""
    opt_out_tags: list[str] = msgspec.field(default_factory=lambda: ["no-learning"])
    """Request tags (`x-gateway-tag` header, else the `user` field) that opt out, as for the header."""
    tenant_salt: str = ""
    """Salt of the tenant hash written in label rows."""
    auto_retrain: AutoRetrainSettings = msgspec.field(default_factory=AutoRetrainSettings)


class LimitSettings(_Section):
    """Gateway keys stored in Redis, and per key / per team rate limits and budgets (see gateway/limits)."""

    enabled: bool = False
    """Off: no key store, no limit check, no work on the request path."""
    redis_url: str | None = None
    """Where keys and counters live (shared by replicas); default `cache.redis_url`; none: in-process only."""
    key_prefix: str = "slmgw:limits:v1"
    timeout_seconds: float = 0.5
    """Redis connect and socket timeout of a limit check (longer than the cache's: a false 429 is not a miss)."""
    fail_open_local: bool = True
    """Redis down: serve local-tier requests unchecked (counted, warned)."""
    fail_open_upstream: bool = False
    """Redis down: serve upstream requests unchecked too (default: refuse them with a 429)."""
    reserve_completion_tokens: int = 1024
    """Completion tokens reserved for a request that sends no `max_tokens`."""
    lease_seconds: float = 600.0
    """A reservation not settled by then (its replica died) is released."""
    key_refresh_seconds: float = 0.25
    """How often each replica looks for new, changed or revoked keys."""
    over_budget_local: bool = False
    """A request over a dollar cap that would spend upstream is served by the local tier instead of a 429 (when
    the local tier can serve it and its cost fits); route reason `budget_exhausted`."""
    lease_blocks: bool = True
    """Each replica holds a block of each busy scope's caps in Redis and admits requests from it with no Redis
    round trip on their path (`gateway.limits.lease`; docs/limits.md "Blocks"); off: one script call each."""
    lease_demand_seconds: float = 0.15
    """A block covers about this much of the replica's recent demand."""
    lease_min_requests: int = 4
    """No block for a scope whose demand over `lease_demand_seconds` is fewer requests than this."""
    lease_headroom_fraction: float = 0.1
    """A grant takes at most this fraction of any cap's headroom (what is neither settled nor held)."""
    lease_min_headroom: int = 20
    """No grant while a cap's headroom is under this many estimates (concurrency: slots): per-request reserves."""
    lease_refresh_seconds: float = 0.1
    """How often blocks are refilled and their use settled (sooner when one runs low)."""
    lease_hold_seconds: float = 5.0
    """The lease of a block's hold in Redis (renewed by each refresh): a dead replica's block expires after it."""
    lease_stale_seconds: float = 1.0
    """Nothing is admitted from a block this long after its last refresh that Redis answered."""


class Settings(_Section):
    """Everything the gateway needs to start."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    api_keys: list[str] = msgspec.field(default_factory=list)
    admin_api_keys: list[str] = msgspec.field(default_factory=list)
    """Keys for `/admin/*` (tenant keys are refused there). None: admin endpoints are open only while the gateway
    has no `api_keys` either, and refused (403) once it has."""
    max_body_bytes: int = 4 * 1024 * 1024
    passthrough_max_body_bytes: int = 512 * 1024 * 1024
    """Body limit of requests passed through to the upstream (file uploads; streamed, never held whole)."""
    max_embedding_inputs: int = 2048
    log_level: str = "info"
    access_log: bool = True
    """One JSON line per chat request on stderr (logger "slm_gateway.access"; see gateway/access_log.py)."""
    access_log_prompts: bool = False
    """Also log each request's body (its prompt). Off by default: prompts may hold personal data."""
    model_cache_dir: str | None = None
    policy: str | None = None
    classifier_model: str | None = None
    upstream: UpstreamSettings = msgspec.field(default_factory=UpstreamSettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    local: LocalSettings = msgspec.field(default_factory=LocalSettings)
    slm_tiers: dict[str, SlmTierSettings] = msgspec.field(default_factory=dict)
    """More small-model tiers by name, besides `local` (see SlmTierSettings)."""
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    cors: CorsSettings = msgspec.field(default_factory=CorsSettings)
    costs: CostSettings = msgspec.field(default_factory=CostSettings)
    learning: LearningSettings = msgspec.field(default_factory=LearningSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)

    def validate(self) -> Settings:
        """Check values a type cannot express; raise SettingsError naming the setting."""
        if not 0 < self.port < 65536:
            raise SettingsError(f"port must be between 1 and 65535, got {self.port}")
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if self.max_body_bytes < 1024:
            raise SettingsError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.upstream.url is not None:
            url = self.upstream.url.rstrip("/")
            if not url.startswith(("http://", "https://")) or "#" in url:
                raise SettingsError(
                    f"upstream.url must be an http(s) OpenAI-compatible base URL (such as .../v1), got {url!r}"
                )
            self.upstream.url = url
        if self.upstream.connect_timeout <= 0 or self.upstream.read_timeout <= 0:
            raise SettingsError("upstream timeouts must be positive")
        if self.upstream.max_response_bytes < 1024:
            raise SettingsError(
                f"upstream.max_response_bytes must be at least 1024, got {self.upstream.max_response_bytes}"
            )
        if self.upstream.api_key_file is not None:
            self.upstream.api_key = _read_key_file(self.upstream.api_key_file, self.upstream.api_key)
        server = self.server
        if server.max_header_bytes < 1024:
            raise SettingsError(f"server.max_header_bytes must be at least 1024, got {server.max_header_bytes}")
        timeouts = (server.header_timeout_seconds, server.body_timeout_seconds, server.keep_alive_seconds)
        if min(*timeouts, server.readiness_cache_seconds) <= 0:
            raise SettingsError("server timeouts must be positive")
        if server.max_concurrency is not None and server.max_concurrency < 1:
            raise SettingsError(f"server.max_concurrency must be at least 1, got {server.max_concurrency}")
        if self.local.max_concurrency < 1:
            raise SettingsError(f"local.max_concurrency must be at least 1, got {self.local.max_concurrency}")
        if self.local.max_queue < 0:
            raise SettingsError(f"local.max_queue must be 0 or more, got {self.local.max_queue}")
        if self.local.context_size < 256:
            raise SettingsError(f"local.context_size must be at least 256, got {self.local.context_size}")
        if self.local.model_path is not None and not Path(self.local.model_path).is_file():
            raise SettingsError(f"local.model_path: no such file {self.local.model_path!r}")
        _validate_redis_url("cache.redis_url", self.cache.redis_url)
        if self.cache.ttl_seconds < 1:
            raise SettingsError(f"cache.ttl_seconds must be at least 1, got {self.cache.ttl_seconds}")
        if self.cache.max_entry_bytes < 1 or self.cache.max_memory_entries < 1:
            raise SettingsError("cache.max_entry_bytes and cache.max_memory_entries must be at least 1")
        if self.cache.max_memory_bytes < 1:
            raise SettingsError(f"cache.max_memory_bytes must be at least 1, got {self.cache.max_memory_bytes}")
        if self.cache.timeout_seconds <= 0 or self.cache.lock_timeout_seconds <= 0:
            raise SettingsError("cache.timeout_seconds and cache.lock_timeout_seconds must be positive")
        if not self.cache.key_prefix or any(c.isspace() for c in self.cache.key_prefix):
            raise SettingsError(f"cache.key_prefix must be non-empty without spaces, got {self.cache.key_prefix!r}")
        _validate_semantic(self.cache.semantic)
        _validate_learning(self.learning)
        _validate_limits(self.limits)
        for name, tier in self.slm_tiers.items():
            _validate_slm_tier(name, tier)
        for field in ("api_keys", "admin_api_keys"):
            for key in getattr(self, field):
                if not key or any(c.isspace() for c in key):
                    raise SettingsError(f"{field} must be non-empty strings without spaces")
        if set(self.api_keys) & set(self.admin_api_keys):
            raise SettingsError("admin_api_keys must differ from api_keys")
        return self


def _validate_semantic(semantic: SemanticCacheSettings) -> None:
    if semantic.threshold is not None and not 0.0 < semantic.threshold <= 1.0:
        raise SettingsError(f"cache.semantic.threshold must be in (0, 1], got {semantic.threshold}")
    for name in ("max_turns", "max_chars", "candidates", "max_rows_per_scope", "max_vectors"):
        if getattr(semantic, name) < 1:
            raise SettingsError(f"cache.semantic.{name} must be at least 1, got {getattr(semantic, name)}")
    if semantic.sync_interval_seconds < 0:
        raise SettingsError(f"cache.semantic.sync_interval_seconds must be 0 or more, got {semantic.sync_interval_seconds}")
    if semantic.deadline_seconds <= 0:
        raise SettingsError(f"cache.semantic.deadline_seconds must be positive, got {semantic.deadline_seconds}")


def _validate_slm_tier(name: str, tier: SlmTierSettings) -> None:
    where = f"slm_tiers.{name}"
    if not re.match(TIER_NAME, name) or name in RESERVED_TIER_NAMES:
        raise SettingsError(f"{where}: a tier name is lowercase letters, digits, '-' or '_' (at most 32), and not "
                            f"one of {', '.join(sorted(RESERVED_TIER_NAMES))}")
    if (tier.model_path is None) == (tier.url is None):
        raise SettingsError(f"{where}: give model_path (in-process GGUF) or url (remote server), not both")
    if tier.model_path is not None and not Path(tier.model_path).is_file():
        raise SettingsError(f"{where}.model_path: no such file {tier.model_path!r}")
    if tier.url is not None:
        url = tier.url.rstrip("/")
        if not url.startswith(("http://", "https://")) or "#" in url:
            raise SettingsError(f"{where}.url must be an http(s) OpenAI-compatible base URL (such as .../v1), got {url!r}")
        tier.url = url
    if tier.model_path is not None and tier.features is not None:
        raise SettingsError(f"{where}.features: only for a remote tier (an in-process one honours tools and "
                            "response_format)")
    unknown = set(tier.features or ()) - SLM_TIER_FEATURES
    if unknown:
        raise SettingsError(f"{where}.features: unknown {sorted(unknown)}; choose from {sorted(SLM_TIER_FEATURES)}")
    if tier.max_concurrency < 1 or tier.max_queue < 0 or tier.context_size < 256:
        raise SettingsError(f"{where}: max_concurrency must be at least 1, max_queue 0 or more, context_size at "
                            "least 256")
    if tier.connect_timeout <= 0 or tier.read_timeout <= 0:
        raise SettingsError(f"{where}: timeouts must be positive")
    tier.model_name = tier.model_name or name


def _validate_learning(learning: LearningSettings) -> None:
    if not 0.0 <= learning.shadow_rate <= 1.0:
        raise SettingsError(f"learning.shadow_rate must be between 0 and 1, got {learning.shadow_rate}")
    if learning.max_judge_dollars_per_day < 0:
        raise SettingsError("learning.max_judge_dollars_per_day must be 0 or more")
    for name in ("queue_size", "workers", "local_concurrency", "shadow_max_tokens", "judge_max_tokens",
                 "recent_requests", "recent_ttl_seconds", "stream_max_len", "max_prompt_chars"):
        if getattr(learning, name) < 1:
            raise SettingsError(f"learning.{name} must be at least 1, got {getattr(learning, name)}")
    if not learning.redis_stream or any(c.isspace() for c in learning.redis_stream):
        raise SettingsError(f"learning.redis_stream must be non-empty without spaces, got {learning.redis_stream!r}")
    learning.opt_out_header = learning.opt_out_header.lower()
    retrain = learning.auto_retrain
    if retrain.interval_seconds < 0 or retrain.timeout_seconds <= 0 or retrain.min_new_labels < 1:
        raise SettingsError("learning.auto_retrain: interval_seconds must be >= 0, timeout_seconds > 0 and "
                            "min_new_labels >= 1")


def _validate_redis_url(name: str, url: str | None) -> None:
    """A Redis URL both clients honour alike (`gateway.redis_url`; its TLS files loaded now), else a startup error
    that names the option, never the password."""
    if url is not None:
        try:
            redis_target(url)
        except RedisUrlError as exc:
            raise SettingsError(f"{name}: {exc}") from None


def _validate_limits(limits: LimitSettings) -> None:
    _validate_redis_url("limits.redis_url", limits.redis_url)
    if min(limits.timeout_seconds, limits.lease_seconds, limits.key_refresh_seconds) <= 0:
        raise SettingsError("limits.timeout_seconds, lease_seconds and key_refresh_seconds must be positive")
    if limits.reserve_completion_tokens < 1:
        raise SettingsError(f"limits.reserve_completion_tokens must be at least 1, got {limits.reserve_completion_tokens}")
    if not limits.key_prefix or any(c.isspace() for c in limits.key_prefix):
        raise SettingsError(f"limits.key_prefix must be non-empty without spaces, got {limits.key_prefix!r}")


def _read_key_file(path: str, given: str | None) -> str:
    """The key in `path`; SettingsError when it is unreadable or empty (or a key was also given another way)."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"upstream.api_key_file: cannot read {path!r} ({exc.strerror or exc})") from None
    if not key:
        raise SettingsError(f"upstream.api_key_file: {path!r} is empty")
    if given and given != key:
        raise SettingsError("upstream.api_key and upstream.api_key_file are both set: give one")
    return key


# Environment variables: name -> (dotted setting path, parser).
_ENV_MAP: dict[str, str] = {
    "HOST": "host",
    "PORT": "port",
    "WORKERS": "workers",
    "API_KEYS": "api_keys",
    "ADMIN_API_KEYS": "admin_api_keys",
    "MAX_BODY_BYTES": "max_body_bytes",
    "LOG_LEVEL": "log_level",
    "ACCESS_LOG": "access_log",
    "ACCESS_LOG_PROMPTS": "access_log_prompts",
    "MODEL_CACHE_DIR": "model_cache_dir",
    "POLICY": "policy",
    "CLASSIFIER_MODEL": "classifier_model",
    "UPSTREAM_URL": "upstream.url",
    "UPSTREAM_API_KEY": "upstream.api_key",
    "UPSTREAM_API_KEY_FILE": "upstream.api_key_file",
    "UPSTREAM_DEFAULT_MODEL": "upstream.default_model",
    "UPSTREAM_CLIENT": "upstream.client",
    "UPSTREAM_AUTH_HEADER": "upstream.auth_header",
    "CORS_ALLOW_ORIGINS": "cors.allow_origins",
    "LOCAL_MODEL": "local.model_path",
    "LOCAL_CONTEXT_SIZE": "local.context_size",
    "LOCAL_MAX_CONCURRENCY": "local.max_concurrency",
    "LOCAL_MAX_QUEUE": "local.max_queue",
    "LOCAL_THREADS": "local.threads",
    "REDIS_URL": "cache.redis_url",
    "CACHE_TTL_SECONDS": "cache.ttl_seconds",
    "SHADOW_RATE": "learning.shadow_rate",
    "JUDGE_MODEL": "learning.judge_model",
    "LABELS_PATH": "learning.labels_path",
    "CACHE_MAX_MEMORY_BYTES": "cache.max_memory_bytes",
    "LIMITS": "limits.enabled",
    "LIMITS_REDIS_URL": "limits.redis_url",
    "SEMANTIC_CACHE": "cache.semantic.enabled",
}


_LIST_SETTINGS = frozenset({"api_keys", "admin_api_keys", "cors.allow_origins"})
"""Settings given in the environment as comma-separated lists."""


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as SLM_GATEWAY_* environment variables, as a nested dict."""
    out: dict[str, Any] = {}
    for suffix, path in _ENV_MAP.items():
        raw = environ.get(ENV_PREFIX + suffix)
        if raw is None or raw == "":
            continue
        value: Any = [k.strip() for k in raw.split(",") if k.strip()] if path in _LIST_SETTINGS else raw
        _set_path(out, path, value)
    return out


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a dict; SettingsError if it is missing or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated Settings from a YAML file, SLM_GATEWAY_* env vars and explicit overrides (CLI flags)."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    raw: dict[str, Any] = read_config_file(config_file) if config_file else {}
    _merge(raw, env_overrides(environ))
    _merge(raw, overrides or {})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        source = f" (in {config_file}, env or flags)" if config_file else ""
        raise SettingsError(f"invalid setting{source}: {exc}") from None
    return settings.validate()

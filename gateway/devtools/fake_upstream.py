"""A fake OpenAI-compatible upstream LLM for tests and benchmarks.

Run it with `python -m gateway.devtools.fake_upstream --port 9000`, or build it in-process with
`build_app(FakeUpstreamConfig(...))` and `serve(config)`. Answers are deterministic:
"fake answer to: <last user message>", with `model` echoed and word-count token usage.

Per-request control through request headers (they override the command-line defaults):

- `x-fake-latency-ms`: wait this long before the response head.
- `x-fake-status`: answer with this status and an OpenAI-shaped error body.
- `x-fake-retry-after`: add a `retry-after` header to an error answer.
- `x-fake-chunks`: number of content chunks in a stream.
- `x-fake-chunk-delay-ms`: pause between stream events (of the other endpoints' streams too).
- `x-fake-drop-after-chunks`: close the connection after sending N stream events (the role
  event, content events, the finish event, the usage event and `[DONE]` each count as one);
  without `stream`, close it before answering at all.
- `x-fake-hang`: never answer (for timeout tests); the connection stays open.

Misbehaviour for gateway tests (command-line flags only, since a gateway does not forward `x-fake-*`):

- `--echo-key message|field|stream`: echo the bearer token it received, as careless providers do: in the
  error message (of a 401 or an injected error), in other fields of the error body (`error.param` and a
  top-level `debug` object), or in an `{"error": ...}` event after the first event of a 200 stream.
- `--usage ok|negative|string|not_object|malformed`: the usage it reports (negative counts, counts as
  strings, `"usage": "lots"`, or a usage chunk / completion body that is not valid JSON).
- `--pad-bytes N`: add N bytes (a `padding` field) to every completion body.
- `--retry-after V`: the `retry-after` header of injected errors (`x-fake-retry-after` overrides it).
- `--ratelimit-requests N`: the answers of the other endpoints (responses, completions, embeddings,
  moderations) carry OpenAI's `x-ratelimit-*` headers of an account with N requests and 1000 * N tokens per minute.

Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/responses`,
`POST /v1/completions`, `POST /v1/embeddings`, `POST /v1/moderations`, `POST /v1/files`,
`GET /v1/files/{id}/content` (see gateway/devtools/fake_extras.py), `GET /health`, and for tests
`GET|DELETE /_fake/requests` (what was received, in arrival order, authorization headers kept verbatim),
`GET /_fake/stats`, `GET /_fake/config`, `POST /_fake/release?name=NAME` (opens a hold).

Judge mode (`--judge-script FILE`, gateway/devtools/fake_judge.py): requests carrying the gateway's judge
`response_format` get scripted verdicts; answers whose prompt names a hold wait for its release.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from gateway.devtools.fake_judge import JudgeScript, hold_for, judge_completion, load_script, verdict_content, verdict_rule
from gateway.devtools import fake_extras
from gateway.devtools.httpserver import HTTPServer, Request, Responder
from gateway.learning.judge import is_judge_request

JSON_HEADERS = (("content-type", "application/json"),)
SSE_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", None),
    409: ("conflict_error", None),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}

_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(frozen=True, slots=True)
class FakeUpstreamConfig:
    """Default behaviour of the fake upstream; request headers override it per request."""

    host: str = "127.0.0.1"
    port: int = 9000
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    chunks: int = 4
    error_rate: float = 0.0
    error_status: int = 500
    api_key: str | None = None
    models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "fake-model")
    record_max: int = 1000
    echo_chars: int = 200
    seed: int | None = None
    judge_script: str | None = None
    """JSON script of judge verdicts and answer holds (see gateway/devtools/fake_judge.py)."""
    echo_key: str | None = None
    usage: str = "ok"
    pad_bytes: int = 0
    retry_after: str | None = None
    ratelimit_requests: int = 0
    """> 0: the other endpoints' answers carry `x-ratelimit-*` headers of an account with this rpm."""


@dataclass(slots=True)
class _Options:
    """Behaviour for one request: config defaults overridden by x-fake-* headers."""

    latency_ms: float
    chunk_delay_ms: float
    chunks: int
    status: int | None = None
    retry_after: str | None = None
    drop_after: int | None = None
    hang: bool = False


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    chat_completions: int = 0
    streams: int = 0
    errors: int = 0
    errors_injected: int = 0
    dropped: int = 0
    hung: int = 0
    health_checks: int = 0
    in_flight: int = 0
    models: int = 0


def error_body(status: int, message: str, *, param: str | None = None) -> bytes:
    """An OpenAI-shaped error body for `status`."""
    kind, code = ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return _encode({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts with text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _split(text: str, parts: int) -> list[str]:
    """`text` cut into `parts` consecutive pieces (some empty if text is short); they join back to it."""
    parts = max(1, parts)
    n = len(text)
    return [text[i * n // parts : (i + 1) * n // parts] for i in range(parts)]


def _sse(payload: Any) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


@dataclass(eq=False)
class FakeUpstream:
    """The request handler: call it with (request, responder); it is the fake upstream's 'app'."""

    config: FakeUpstreamConfig
    recorded: deque[dict[str, Any]] = field(init=False)
    stats: _Stats = field(default_factory=_Stats)
    rng: random.Random = field(init=False)
    server: HTTPServer | None = None
    script: JudgeScript = field(init=False)
    files: fake_extras.FakeFiles = field(default_factory=fake_extras.FakeFiles)
    _next_id: int = 0

    def __post_init__(self) -> None:
        self.recorded = deque(maxlen=max(1, self.config.record_max))
        self.rng = random.Random(self.config.seed)
        self.script = load_script(self.config.judge_script)

    def __call__(self, req: Request, resp: Responder) -> Any:
        """Route one request; returns an awaitable only when the answer has to wait."""
        path = req.path
        if path.startswith("/_fake/"):
            return self._control(req, resp)
        if path == "/health" or path == "/healthz":
            self.stats.health_checks += 1
            resp.send(200, b'{"status":"ok"}', JSON_HEADERS)
            return None
        self.stats.requests += 1
        self._record(req)
        if path.startswith("/v1/") and not self._authorized(req):
            self.stats.errors += 1
            resp.send(401, self._error_payload(req, 401, "Incorrect API key provided"), JSON_HEADERS)
            return None
        if path == "/v1/chat/completions":
            if req.method != "POST":
                return self._error(resp, 405, f"Method {req.method} not allowed on {path}.")
            return self._chat(req, resp)
        if path == "/v1/models":
            self.stats.models += 1
            if req.method != "GET":
                return self._error(resp, 405, f"Method {req.method} not allowed on {path}.")
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "fake-upstream"} for m in self.config.models]
            resp.send(200, _encode({"object": "list", "data": models}), JSON_HEADERS)
            return None
        if path.startswith("/v1/models/") and req.method == "GET":
            model_id = path.removeprefix("/v1/models/")
            if model_id not in self.config.models:
                return self._error(resp, 404, f"The model '{model_id}' does not exist", param="model")
            resp.send(200, _encode({"id": model_id, "object": "model", "created": 0, "owned_by": "fake-upstream"}),
                      JSON_HEADERS)
            return None
        return self._extra(req, resp, path)

    # -- the other endpoints (gateway/devtools/fake_extras.py) -------------
    def _extra(self, req: Request, resp: Responder, path: str) -> Any:
        if path == "/v1/files" and req.method == "POST":
            meta = self.files.upload(req.header("content-type") or "", req.body)
            if meta is None:
                return self._error(resp, 400, "Missing 'file' in the multipart body.", param="file")
            resp.send(200, _encode(meta), JSON_HEADERS)
            return None
        if path.startswith("/v1/files/") and path.endswith("/content") and req.method == "GET":
            content = self.files.content(path.removeprefix("/v1/files/").removesuffix("/content"))
            if content is None:
                return self._error(resp, 404, "No such file.")
            resp.send(200, content, (("content-type", "application/octet-stream"),))
            return None
        handlers = {"/v1/responses": self._responses, "/v1/completions": self._legacy,
                    "/v1/embeddings": fake_extras.embeddings, "/v1/moderations": fake_extras.moderation}
        handler = handlers.get(path)
        if handler is None:
            return self._error(resp, 404, f"Unknown path {path}.")
        if req.method != "POST":
            return self._error(resp, 405, f"Method {req.method} not allowed on {path}.")
        opts = self._options(req)
        if opts.status is not None:
            return self._error(resp, opts.status, f"Injected error (status {opts.status}).", retry_after=opts.retry_after)
        try:
            body = _decode(req.body) if req.body else None
        except msgspec.DecodeError:
            return self._error(resp, 400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._error(resp, 400, "you must provide a model parameter", param="model")
        try:
            answer = handler(body)
        except Exception as exc:  # a malformed body the translation refused
            return self._error(resp, 400, str(exc))
        limits = self._ratelimit_headers()
        if isinstance(answer, bytes) and opts.chunk_delay_ms > 0:
            return self._events_slowly(answer, SSE_HEADERS + limits, opts.chunk_delay_ms, resp)
        if isinstance(answer, bytes):
            resp.start(200, SSE_HEADERS + limits)
            resp.write(answer)
            resp.end()
        else:
            resp.send(200, _encode(answer), JSON_HEADERS + limits)
        return None

    @staticmethod
    async def _events_slowly(events: bytes, headers: tuple[tuple[str, str], ...], delay_ms: float,
                             resp: Responder) -> None:
        """An event stream of the other endpoints, one event every `delay_ms` (as chat streams pause)."""
        resp.start(200, headers)
        for i, event in enumerate(e for e in events.split(b"\n\n") if e):
            if i:
                await asyncio.sleep(delay_ms / 1000)
            if resp.closed:
                return
            resp.write(event + b"\n\n")
            await resp.drain()
        resp.end()

    def _ratelimit_headers(self) -> tuple[tuple[str, str], ...]:
        """OpenAI's rate-limit headers of this (fake) account, as every OpenAI answer carries them."""
        rpm = self.config.ratelimit_requests
        if rpm <= 0:
            return ()
        return (("x-ratelimit-limit-requests", str(rpm)), ("x-ratelimit-remaining-requests", str(rpm - 1)),
                ("x-ratelimit-reset-requests", "6ms"), ("x-ratelimit-limit-tokens", str(1000 * rpm)),
                ("x-ratelimit-remaining-tokens", str(1000 * rpm - 1)), ("x-ratelimit-reset-tokens", "0s"))

    def _responses(self, body: dict[str, Any]) -> Any:
        if body.get("stream") is True:
            return fake_extras.responses_events(body, lambda chat: self._completion(chat, chat["model"]))
        return fake_extras.responses_answer(body, lambda chat: self._completion(chat, chat["model"]))

    def _legacy(self, body: dict[str, Any]) -> Any:
        whole, events = fake_extras.legacy_completion(body)
        return b"".join(events) if body.get("stream") is True else whole

    # -- chat completions -------------------------------------------------
    def _chat(self, req: Request, resp: Responder) -> Any:
        opts = self._options(req)
        if opts.status is None and self.config.error_rate > 0 and self.rng.random() < self.config.error_rate:
            opts.status = self.config.error_status
            self.stats.errors_injected += 1
        try:
            body = _decode(req.body) if req.body else None
        except msgspec.DecodeError:
            return self._error(resp, 400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self._error(resp, 400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(resp, 400, "'messages' must be a non-empty array.", param="messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(resp, 400, "you must provide a model parameter", param="model")
        self.stats.chat_completions += 1
        stream = body.get("stream") is True
        if stream:
            self.stats.streams += 1
        if opts.status is None and is_judge_request(body):
            return self._judge(body, model, resp)
        gate = hold_for(self.script, body, _last_user(body))
        if gate is not None and not gate.is_set():
            return self._chat_held(body, model, stream, opts, resp, gate)
        if opts.hang or opts.latency_ms > 0 or opts.drop_after is not None or (stream and opts.chunk_delay_ms > 0):
            return self._chat_slow(req, body, model, stream, opts, resp)
        if opts.status is not None:
            return self._injected(req, resp, opts)
        if stream:
            resp.start(200, SSE_HEADERS)
            events = self._stream_events(body, model, opts)
            if self.config.echo_key == "stream":
                events = [events[0], _sse(_decode(self._error_payload(req, 500, "Stream failed")))]
            resp.write(b"".join(events))
            resp.end()
        else:
            resp.send(200, self._completion_bytes(body, model), JSON_HEADERS)
        return None

    def _injected(self, req: Request, resp: Responder, opts: _Options) -> None:
        """Answer with the injected error status (echoing the key if so configured)."""
        self.stats.errors += 1
        status = opts.status or 500
        headers = JSON_HEADERS + ((("retry-after", opts.retry_after),) if opts.retry_after else ())
        resp.send(status, self._error_payload(req, status, f"Injected error (status {status})"), headers)

    def _error_payload(self, req: Request, status: int, message: str) -> bytes:
        """An OpenAI-shaped error body; with `echo_key`, the received bearer token is echoed in it."""
        key = (req.header("authorization") or "").removeprefix("Bearer ")
        mode = self.config.echo_key
        if mode in ("message", "stream"):
            return error_body(status, f"{message}: {key}.")
        if mode == "field":
            error = _decode(error_body(status, f"{message}.", param=key))
            return _encode({**error, "debug": {"authorization": f"Bearer {key}"}})
        return error_body(status, f"{message}.")

    def _completion_bytes(self, body: dict[str, Any], model: str) -> bytes:
        completion = self._completion(body, model)
        if self.config.pad_bytes > 0:
            completion["padding"] = "x" * self.config.pad_bytes
        encoded = _encode(completion)
        return encoded[:-20] if self.config.usage == "malformed" else encoded

    async def _chat_slow(
        self, req: Request, body: dict[str, Any], model: str, stream: bool, opts: _Options, resp: Responder
    ) -> None:
        self.stats.in_flight += 1
        try:
            if opts.hang:
                self.stats.hung += 1
                await asyncio.get_running_loop().create_future()  # until the client goes away
            if opts.latency_ms > 0:
                await asyncio.sleep(opts.latency_ms / 1000)
            if opts.status is not None:
                self._injected(req, resp, opts)
                return
            if not stream and opts.drop_after is not None:
                self.stats.dropped += 1
                resp.abort()
                return
            if not stream:
                resp.send(200, self._completion_bytes(body, model), JSON_HEADERS)
                return
            resp.start(200, SSE_HEADERS)
            for i, event in enumerate(self._stream_events(body, model, opts)):
                if opts.drop_after is not None and i >= opts.drop_after:
                    self.stats.dropped += 1
                    resp.abort()
                    return
                if i and opts.chunk_delay_ms > 0:
                    await asyncio.sleep(opts.chunk_delay_ms / 1000)
                if resp.closed:
                    return
                resp.write(event)
                await resp.drain()
            resp.end()
        finally:
            self.stats.in_flight -= 1

    # -- judge mode and holds (gateway/devtools/fake_judge.py) -------------
    def _judge(self, body: dict[str, Any], model: str, resp: Responder) -> None:
        """Answer a judge request with its scripted verdict (or scripted error)."""
        rule = verdict_rule(self.script, body)
        if rule.status is not None:
            return self._error(resp, rule.status, f"Scripted judge error (status {rule.status}).")
        resp.send(200, _encode(judge_completion(verdict_content(rule), body, model, self._new_id())), JSON_HEADERS)
        return None

    async def _chat_held(self, body: dict[str, Any], model: str, stream: bool, opts: _Options, resp: Responder,
                         gate: asyncio.Event) -> None:
        """Answer once `gate` opens; a stream sends its role and first content event before waiting."""
        self.stats.in_flight += 1
        try:
            if not stream:
                await gate.wait()
                resp.send(200, _encode(self._completion(body, model)), JSON_HEADERS)
                return
            events = self._stream_events(body, model, opts)
            resp.start(200, SSE_HEADERS)
            resp.write(b"".join(events[:2]))
            await resp.drain()
            await gate.wait()
            if resp.closed:
                return
            resp.write(b"".join(events[2:]))
            resp.end()
        finally:
            self.stats.in_flight -= 1

    def _answer(self, body: dict[str, Any]) -> tuple[str, str, int, int]:
        """(content, finish_reason, prompt_tokens, completion_tokens) for a request body."""
        messages = body["messages"]
        prompt_tokens = 0
        last_user = ""
        for m in messages:
            if isinstance(m, dict):
                text = _text_of(m.get("content"))
                prompt_tokens += _words(text)
                if m.get("role") == "user":
                    last_user = text
        last_user = fake_extras.tool_result_text(body) or last_user
        content = "fake answer to: " + last_user[: self.config.echo_chars]
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        words = content.split(" ")
        if isinstance(limit, int) and limit > 0 and len(words) > limit:
            content = " ".join(words[:limit])
            finish = "length"
        return content, finish, max(1, prompt_tokens), _words(content)

    def _new_id(self) -> str:
        self._next_id += 1
        return f"chatcmpl-fake-{self._next_id}"

    def _completion(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        content, finish, prompt, completion = self._answer(body)
        call = fake_extras.tool_call_for(body)
        answer = {
            "id": self._new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": self._usage(prompt, completion),
        }
        return answer if call is None else fake_extras.tool_call_completion(answer, call)

    def _usage(self, prompt: int, completion: int) -> Any:
        """The usage object to report, honest or (per `--usage`) not."""
        mode = self.config.usage
        if mode == "negative":
            prompt, completion = -prompt, -completion
        elif mode == "string":
            return {"prompt_tokens": str(prompt), "completion_tokens": str(completion), "total_tokens": "many"}
        elif mode == "not_object":
            return "lots"
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _stream_events(self, body: dict[str, Any], model: str, opts: _Options) -> list[bytes]:
        """Every SSE event of a streamed answer, `data: [DONE]` included."""
        content, finish, prompt, completion = self._answer(body)
        stream_options = body.get("stream_options")
        usage_wanted = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        base = {"id": self._new_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_fake"}
        extra = {"usage": None} if usage_wanted else {}
        call = fake_extras.tool_call_for(body)
        if call is not None:
            usage = {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
            return fake_extras.tool_call_chunks({**base, **extra}, call, usage if usage_wanted else None)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse({**base, "choices": [choice], **extra})

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in _split(content, opts.chunks)]
        events.append(chunk({}, finish))
        if usage_wanted:
            event = _sse({**base, "choices": [], "usage": self._usage(prompt, completion)})
            events.append(event[:-22] + b"\n\n" if self.config.usage == "malformed" else event)
        events.append(b"data: [DONE]\n\n")
        return events

    # -- helpers ----------------------------------------------------------
    def _options(self, req: Request) -> _Options:
        cfg = self.config
        opts = _Options(latency_ms=cfg.latency_ms, chunk_delay_ms=cfg.chunk_delay_ms, chunks=cfg.chunks,
                        retry_after=cfg.retry_after)
        for name, value in req.headers:
            if not name.startswith("x-fake-"):
                continue
            try:
                if name == "x-fake-latency-ms":
                    opts.latency_ms = float(value)
                elif name == "x-fake-status":
                    status = int(value)
                    opts.status = status if status >= 400 else None
                elif name == "x-fake-retry-after":
                    opts.retry_after = value
                elif name == "x-fake-chunks":
                    opts.chunks = max(1, int(value))
                elif name == "x-fake-chunk-delay-ms":
                    opts.chunk_delay_ms = float(value)
                elif name == "x-fake-drop-after-chunks":
                    opts.drop_after = max(0, int(value))
                elif name == "x-fake-hang":
                    opts.hang = value.strip().lower() not in ("", "0", "false", "no")
            except ValueError:
                continue
        return opts

    def _authorized(self, req: Request) -> bool:
        key = self.config.api_key
        return key is None or req.header("authorization") == f"Bearer {key}"

    def _error(self, resp: Responder, status: int, message: str, *, param: str | None = None,
               retry_after: str | None = None) -> None:
        self.stats.errors += 1
        headers = JSON_HEADERS + ((("retry-after", retry_after),) if retry_after else ())
        resp.send(status, error_body(status, message, param=param), headers)

    def _record(self, req: Request) -> None:
        headers: dict[str, str] = {}
        for name, value in req.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body: Any = None
        if req.body:
            try:
                body = _decode(req.body)
            except msgspec.DecodeError:
                body = req.body.decode("utf-8", "replace")
        self.recorded.append({"method": req.method, "path": req.target, "headers": headers, "body": body,
                              "time": time.time()})

    def _control(self, req: Request, resp: Responder) -> None:
        path = req.path
        if path == "/_fake/requests" and req.method == "GET":
            items = list(self.recorded)
            limit = _query_int(req.query, "limit")
            if limit is not None:
                items = items[-limit:] if limit > 0 else []
            resp.send(200, _encode({"object": "list", "data": items}), JSON_HEADERS)
        elif path == "/_fake/requests" and req.method == "DELETE":
            self.recorded.clear()
            resp.send(200, b'{"cleared":true}', JSON_HEADERS)
        elif path == "/_fake/stats" and req.method == "GET":
            stats = asdict(self.stats)
            if self.server is not None:
                stats["connections"] = self.server.total_connections
                stats["open_connections"] = len(self.server.connections)
            resp.send(200, _encode(stats), JSON_HEADERS)
        elif path == "/_fake/stats" and req.method == "DELETE":
            self.stats = _Stats()
            resp.send(200, b'{"cleared":true}', JSON_HEADERS)
        elif path == "/_fake/release" and req.method == "POST":
            name = _query_str(req.query, "name") or ""
            self.script.gate(name).set()
            resp.send(200, _encode({"released": name}), JSON_HEADERS)
        elif path == "/_fake/config" and req.method == "GET":
            resp.send(200, _encode({**asdict(self.config), "api_key": self.config.api_key}), JSON_HEADERS)
        else:
            resp.send(404, error_body(404, f"Unknown control path {req.method} {path}."), JSON_HEADERS)


def _query_str(query: str, name: str) -> str | None:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or ()):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _query_int(query: str, name: str) -> int | None:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def build_app(config: FakeUpstreamConfig) -> FakeUpstream:
    """The fake upstream's request handler for `config`; serve it with `HTTPServer(app)`."""
    return FakeUpstream(config)


async def serve(config: FakeUpstreamConfig, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when `stop` is not given)."""
    app = build_app(config)
    server = HTTPServer(app)
    app.server = server
    await server.start(config.host, config.port)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on http://{config.host}:{server.port}", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    await server.close()


def parse_args(argv: Sequence[str] | None = None) -> FakeUpstreamConfig:
    """Command-line flags to a config."""
    d = FakeUpstreamConfig()
    p = argparse.ArgumentParser(prog="python -m gateway.devtools.fake_upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--latency-ms", type=float, default=d.latency_ms, help="delay before each answer")
    p.add_argument("--chunk-delay-ms", type=float, default=d.chunk_delay_ms, help="delay between stream events")
    p.add_argument("--chunks", type=int, default=d.chunks, help="content chunks per streamed answer")
    p.add_argument("--error-rate", type=float, default=d.error_rate, help="fraction of chat requests that fail")
    p.add_argument("--error-status", type=int, default=d.error_status, help="status of injected errors")
    p.add_argument("--api-key", default=d.api_key, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--models", default=",".join(d.models), help="comma-separated ids for /v1/models")
    p.add_argument("--record-max", type=int, default=d.record_max, help="requests kept for /_fake/requests")
    p.add_argument("--echo-chars", type=int, default=d.echo_chars, help="user text echoed in answers")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for error injection")
    p.add_argument("--judge-script", default=d.judge_script, help="JSON file of judge verdicts and answer holds")
    p.add_argument("--echo-key", choices=("message", "field", "stream"), default=None,
                   help="echo the received bearer token in errors (see the module docstring)")
    p.add_argument("--usage", choices=("ok", "negative", "string", "not_object", "malformed"), default=d.usage,
                   help="the usage it reports")
    p.add_argument("--pad-bytes", type=int, default=d.pad_bytes, help="extra bytes in every completion body")
    p.add_argument("--retry-after", default=d.retry_after, help="retry-after header of injected errors")
    p.add_argument("--ratelimit-requests", type=int, default=d.ratelimit_requests,
                   help="> 0: x-ratelimit-* headers of an account with this rpm on the other endpoints' answers")
    a = p.parse_args(argv)
    if not 0.0 <= a.error_rate <= 1.0:
        p.error("--error-rate must be between 0 and 1")
    if a.error_status < 400:
        p.error("--error-status must be 400 or more")
    return FakeUpstreamConfig(
        host=a.host, port=a.port, latency_ms=a.latency_ms, chunk_delay_ms=a.chunk_delay_ms, chunks=max(1, a.chunks),
        error_rate=a.error_rate, error_status=a.error_status, api_key=a.api_key or None,
        models=tuple(m for m in a.models.split(",") if m), record_max=a.record_max, echo_chars=a.echo_chars,
        seed=a.seed, judge_script=a.judge_script, echo_key=a.echo_key, usage=a.usage, pad_bytes=max(0, a.pad_bytes),
        retry_after=a.retry_after, ratelimit_requests=a.ratelimit_requests,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse flags and serve (on uvloop when it is installed)."""
    config = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

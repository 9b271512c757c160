"""The access log: exact JSON lines for answered and refused requests, never a prompt or a key (in-process app)."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from gateway.access_log import LOGGER_NAME, AccessLog, JsonFormatter, LineWriter
from gateway.auth import tenant_of
from gateway.devtools.fake_backend import FakeBackend
from gateway.exchange import Exchange
from gateway.openai.request import parse_chat_request
from gateway.openai.wire import Usage
from gateway.routing.decision import RouteDecision
from gateway.settings import load_settings

CHAT = "/v1/chat/completions"
KEY = "sk-team-a-secret"
PROMPT = "What is the capital of France, my secret prompt?"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = ["time", "request_id", "tenant", "route", "reason", "tier", "model", "status", "error", "fallback",
          "prompt_tokens", "completion_tokens", "latency_ms", "cache", "stream"]


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the access logger writes, formatted as the gateway formats it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in out.getvalue().splitlines()]


def checked(line: dict[str, Any]) -> dict[str, Any]:
    """The line without its time and latency (checked for shape here), for exact comparison."""
    assert list(line) == FIELDS
    assert ISO_UTC.match(line.pop("time"))
    latency = line.pop("latency_ms")
    assert isinstance(latency, float) and 0.0 <= latency < 60_000.0
    return line


async def test_a_local_answer_and_a_refusal_are_logged_exactly(app_factory: Any, access_lines: io.StringIO) -> None:
    local = FakeBackend("local", reply="Paris is the capital of France.", prompt_tokens=12, model="qwen-local")
    gw = await app_factory(local=local, config={"api_keys": [KEY]})
    auth = {"authorization": f"Bearer {KEY}"}
    request = {"model": "local", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
    assert (await gw.client.post(CHAT, json=request, headers={**auth, "x-request-id": "req-1"})).status_code == 200
    wrong = {"authorization": "Bearer sk-wrong-key", "x-request-id": "req-2"}
    assert (await gw.client.post(CHAT, json=request, headers=wrong)).status_code == 401
    assert (await gw.client.post(CHAT, json={"model": "local"}, headers={**auth, "x-request-id": "req-3"})).status_code == 400
    answered, refused, invalid = lines(access_lines)
    assert checked(answered) == {
        "request_id": "req-1", "tenant": tenant_of(KEY)[:14], "route": "local", "reason": "pinned", "tier": "local",
        "model": "qwen-local", "status": 200, "error": None, "fallback": None, "prompt_tokens": 12,
        "completion_tokens": 6, "cache": "miss", "stream": False,
    }
    assert checked(refused) == {
        "request_id": "req-2", "tenant": None, "route": "none", "reason": "invalid", "tier": "none", "model": None,
        "status": 401, "error": "invalid_api_key", "fallback": None, "prompt_tokens": 0, "completion_tokens": 0,
        "cache": None, "stream": False,
    }
    assert checked(invalid)["status"] == 400 and invalid["tenant"] == tenant_of(KEY)[:14]
    text = access_lines.getvalue()
    assert PROMPT not in text and "secret" not in text and KEY not in text and "sk-wrong-key" not in text


async def test_fallback_and_stream_are_logged(app_factory: Any, access_lines: io.StringIO) -> None:
    from gateway.errors import RateLimited
    from gateway.routing.decision import RouteContext, RouteDecision

    class LocalFirst:
        def decide(self, ctx: RouteContext) -> RouteDecision:
            return RouteDecision(tier="local", reason="pin-local", detail="rule 'pin-local'", fallback="upstream")

    local = FakeBackend("local", error=RateLimited("busy", code="local_queue_full"))
    gw = await app_factory(local=local, upstream=FakeBackend(reply="one two three", prompt_tokens=5),
                           router=LocalFirst())
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    response = await gw.client.post(CHAT, json=request, headers={"x-request-id": "req-s"})
    assert response.status_code == 200
    (line,) = lines(access_lines)
    assert checked(line) == {
        "request_id": "req-s", "tenant": "anonymous", "route": "local", "reason": "pin-local", "tier": "upstream",
        "model": "gpt-4o", "status": 200, "error": None, "fallback": "upstream", "prompt_tokens": 5,
        "completion_tokens": 3, "cache": "bypass", "stream": True,
    }


async def test_prompts_only_when_enabled_and_nothing_when_disabled(app_factory: Any, access_lines: io.StringIO) -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
    with_prompts = await app_factory(upstream=FakeBackend(), config={"access_log_prompts": True})
    assert (await with_prompts.client.post(CHAT, json=request)).status_code == 200
    off = await app_factory(upstream=FakeBackend(), config={"access_log": False})
    assert off.pipeline.accounting.access_log is None
    assert (await off.client.post(CHAT, json=request)).status_code == 200
    (line,) = lines(access_lines)
    assert line["request"] == request


def test_access_log_settings_from_the_environment() -> None:
    settings = load_settings(environ={"SLM_GATEWAY_ACCESS_LOG": "false"})
    assert settings.access_log is False and settings.access_log_prompts is False
    assert load_settings(environ={}).access_log is True



def finished_exchange(request_id: str) -> Exchange:
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}'
    ex = Exchange(request_id, {}, 0.0)
    ex.accept("t-" + "ab" * 12, parse_chat_request(body))
    ex.routed(RouteDecision(tier="local", reason="classifier", detail="classifier p_strong=0.2 < 0.5"), "qwen-local")
    ex.tier, ex.answered_model, ex.status, ex.cache, ex.usage = "local", "qwen-local", 200, "miss", Usage(12, 6)
    return ex


@pytest.fixture
def own_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.access.default")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.handlers.clear()


def test_the_default_writer_queues_encoded_lines_and_writes_them_in_order(own_logger: logging.Logger) -> None:
    out = io.StringIO()
    writer = LineWriter(out, flush_seconds=3600.0)  # the background write never comes first: flush() writes
    own_logger.addHandler(writer)
    log = AccessLog(own_logger)
    log(finished_exchange("req-a"), 0.0123)
    log(finished_exchange("req-b"), 0.5)
    assert out.getvalue() == ""  # queued, not written on the caller's thread
    writer.flush()
    first, second = lines(out)
    assert checked(first) == {
        "request_id": "req-a", "tenant": "t-abababababab", "route": "local", "reason": "classifier",
        "tier": "local", "model": "qwen-local", "status": 200, "error": None, "fallback": None,
        "prompt_tokens": 12, "completion_tokens": 6, "cache": "miss", "stream": False,
    }
    assert second["request_id"] == "req-b" and second["latency_ms"] == 500.0
    # with a host's handler too, the record goes through logging: both get the same line
    host = io.StringIO()
    handler = logging.StreamHandler(host)
    handler.setFormatter(JsonFormatter())
    own_logger.addHandler(handler)
    log(finished_exchange("req-c"), 0.25)
    writer.flush()
    (via_host,) = lines(host)
    assert lines(out)[2] == via_host and via_host["request_id"] == "req-c"


def test_a_stream_that_does_not_keep_up_loses_lines_counted_not_memory(own_logger: logging.Logger) -> None:
    out = io.StringIO()
    writer = LineWriter(out, flush_seconds=3600.0, max_pending=2)
    own_logger.addHandler(writer)
    log = AccessLog(own_logger)
    for n in range(5):
        log(finished_exchange(f"req-{n}"), 0.001)
    writer.flush()
    first, second, warning = lines(out)
    assert (first["request_id"], second["request_id"]) == ("req-0", "req-1")
    assert ISO_UTC.match(warning.pop("time"))
    assert warning == {"level": "WARNING", "logger": LOGGER_NAME,
                       "message": "3 access log lines dropped: the log stream did not keep up"}
    log(finished_exchange("req-5"), 0.001)
    writer.flush()
    assert [line.get("request_id") for line in lines(out)] == ["req-0", "req-1", None, "req-5"]  # reported once


class _Signalling(io.StringIO):
    """A stream that says when it was written to (from the writer's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def write(self, text: str) -> int:
        size = super().write(text)
        self.written.set()
        return size


def test_the_writer_thread_writes_a_batch_without_a_flush_call(own_logger: logging.Logger) -> None:
    out = _Signalling()
    own_logger.addHandler(LineWriter(out, flush_seconds=0.01))
    log = AccessLog(own_logger)
    for n in range(3):
        log(finished_exchange(f"req-{n}"), 0.001)
    assert out.written.wait(timeout=30.0)  # a hang guard: the wait ends when the thread writes
    assert [line["request_id"] for line in lines(out)] == ["req-0", "req-1", "req-2"]  # one write, in order


async def test_the_gateway_logs_through_its_writer_alone(app_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    gw = await app_factory(upstream=FakeBackend(reply="one two three", prompt_tokens=5))
    logger = logging.getLogger(LOGGER_NAME)
    (writer,) = logger.handlers
    assert isinstance(writer, LineWriter) and logger.propagate is False
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
    assert (await gw.client.post(CHAT, json=request, headers={"x-request-id": "req-bg"})).status_code == 200
    writer.flush()
    (line,) = [msgspec.json.decode(text) for text in capsys.readouterr().err.splitlines() if '"req-bg"' in text]
    assert checked(line) == {
        "request_id": "req-bg", "tenant": "anonymous", "route": "upstream", "reason": "default", "tier": "upstream",
        "model": "gpt-4o", "status": 200, "error": None, "fallback": None, "prompt_tokens": 5,
        "completion_tokens": 3, "cache": "bypass", "stream": False,
    }

"""Rule conditions: per-request features computed lazily, and `When` compiled into predicates.

Globs and regexes are compiled once per policy load; expensive features (PII scan, classifier score) are
only computed when a rule that is actually evaluated needs them, and at most once per request.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.openai.request import has_images, message_text
from gateway.routing.decision import RouteContext
from gateway.routing.pii import expand_kinds, scan
from gateway.routing.policy import Range, When, as_list

TAG_HEADER = "x-gateway-tag"
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4

Predicate = Callable[["RequestFeatures"], bool]


class Scorer:
    """What the router needs from a classifier: p_strong for OpenAI chat messages (see `classifier.RouterModel`)."""

    def score_messages(self, messages: Sequence[Mapping[str, Any]]) -> float: ...  # pragma: no cover

    # optional: `familiarity_messages(messages) -> float | None` (how familiar the prompt is to its training data)


class RequestFeatures:
    """What the rules look at for one request; the costly parts are computed on first use and cached."""

    __slots__ = ("ctx", "_scorer", "_pii_max_chars", "_pii_beyond_cap", "_observe", "_text", "_tokens",
                 "_pii_checked", "_pii_found", "_score", "score_seconds", "_familiarity", "_familiarity_done")

    def __init__(
        self,
        ctx: RouteContext,
        scorer: Scorer | None,
        *,
        pii_max_chars: int = 65536,
        pii_beyond_cap: str = "assume",
        observe_score_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self._scorer = scorer
        self._pii_max_chars = pii_max_chars
        self._pii_beyond_cap = pii_beyond_cap
        self._observe = observe_score_seconds
        self._text: str | None = None
        self._tokens: int | None = None
        self._pii_checked: set[str] = set()
        self._pii_found: set[str] = set()
        self._score: float | None = None
        self.score_seconds: float | None = None
        self._familiarity: float | None = None
        self._familiarity_done = False

    @property
    def model(self) -> str:
        return self.ctx.request.chat.model

    def header(self, name: str) -> str | None:
        return self.ctx.headers.get(name)

    @property
    def tag(self) -> str | None:
        """The caller's tag: the `x-gateway-tag` header, else the OpenAI `user` field."""
        return self.ctx.headers.get(TAG_HEADER) or self.ctx.request.chat.user

    @property
    def text(self) -> str:
        """All message text (content parts and tool-call arguments), joined."""
        if self._text is None:
            parts: list[str] = []
            for message in self.ctx.request.chat.messages:
                parts.append(message_text(message))
                for call in message.tool_calls or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        parts.append(str(function.get("arguments", "")))
            self._text = "\n".join(p for p in parts if p)
        return self._text

    @property
    def prompt_tokens(self) -> int:
        """Cheap estimate of the prompt tokens: characters / 4 plus a few per message."""
        if self._tokens is None:
            chars = len(self.text)
            self._tokens = -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(self.ctx.request.chat.messages)
        return self._tokens

    def pii(self, kinds: Sequence[str]) -> frozenset[str]:
        """The kinds among `kinds` found in the (capped) text; over the cap, 'assume' reports every kind."""
        todo = [k for k in kinds if k not in self._pii_checked]
        if todo:
            text = self.text
            if len(text) > self._pii_max_chars and self._pii_beyond_cap == "assume":
                self._pii_found.update(todo)
            else:
                self._pii_found.update(scan(text[: self._pii_max_chars], todo))
            self._pii_checked.update(todo)
        return frozenset(k for k in kinds if k in self._pii_found)

    @property
    def has_scorer(self) -> bool:
        return self._scorer is not None

    def score(self) -> float:
        """The classifier's p_strong (raises if there is no classifier; callers check `has_scorer`)."""
        if self._score is None:
            assert self._scorer is not None
            started = time.perf_counter()
            messages = self.ctx.request.raw.get("messages") or []
            self._score = float(self._scorer.score_messages(messages))
            self.score_seconds = time.perf_counter() - started
            if self._observe is not None:
                self._observe(self.score_seconds)
        return self._score

    @property
    def score_if_computed(self) -> float | None:
        return self._score

    def familiarity(self) -> float | None:
        """How familiar the prompt is to the classifier's training prompts, in [0, 1]; None when the classifier
        does not say (none loaded, a model without familiarity data, or it failed)."""
        if not self._familiarity_done:
            self._familiarity_done = True
            measure = getattr(self._scorer, "familiarity_messages", None)
            if measure is not None:
                try:
                    value = measure(self.ctx.request.raw.get("messages") or [])
                except Exception:  # a familiarity bug must not fail the request: the condition just does not hold
                    value = None
                self._familiarity = None if value is None else float(value)
        return self._familiarity

    @property
    def familiarity_if_computed(self) -> float | None:
        return self._familiarity


def compile_globs(patterns: list[str]) -> re.Pattern[str]:
    """One case-insensitive regex matching any of the shell-style globs."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


def in_range(value: float, rng: Range) -> bool:
    return (
        (rng.gt is None or value > rng.gt)
        and (rng.gte is None or value >= rng.gte)
        and (rng.lt is None or value < rng.lt)
        and (rng.lte is None or value <= rng.lte)
    )


def _tools_present(f: RequestFeatures) -> bool:
    return bool(f.ctx.request.chat.tools) or bool(f.ctx.request.raw.get("functions"))


def _tool_count(f: RequestFeatures) -> int:
    """How many tools the request offers: `tools`, else legacy `functions`."""
    tools = f.ctx.request.chat.tools or f.ctx.request.raw.get("functions")
    return len(tools) if isinstance(tools, list) else 0


def _response_format_type(f: RequestFeatures) -> str | None:
    fmt = f.ctx.request.chat.response_format
    if not fmt:
        return None
    kind = fmt.get("type")
    return str(kind) if kind else "unknown"


class CompiledWhen:
    """A rule's conditions as predicates, cheapest first; `needs_score` tells if the classifier is consulted."""

    def __init__(self, when: When, local_context_tokens: int) -> None:
        self.predicates: list[Predicate] = []
        self.pii_kinds: tuple[str, ...] = ()
        self.needs_score = when.score is not None
        add = self.predicates.append
        if when.model is not None:
            model_re = compile_globs(as_list(when.model))
            add(lambda f: model_re.fullmatch(f.model) is not None)
        for name, patterns in (when.headers or {}).items():
            add(_header_predicate(name, compile_globs(as_list(patterns))))
        if when.tag is not None:
            tag_re = compile_globs(as_list(when.tag))
            add(lambda f: (t := f.tag) is not None and tag_re.fullmatch(t) is not None)
        if when.user is not None:
            user_re = compile_globs(as_list(when.user))
            add(lambda f: (u := f.ctx.request.chat.user) is not None and user_re.fullmatch(u) is not None)
        if when.stream is not None:
            want_stream = when.stream
            add(lambda f: bool(f.ctx.request.chat.stream) == want_stream)
        if when.has_tools is not None:
            want_tools = when.has_tools
            add(lambda f: _tools_present(f) == want_tools)
        if when.tool_count is not None:
            count_range = when.tool_count
            add(lambda f: in_range(_tool_count(f), count_range))
        if when.has_images is not None:
            want_images = when.has_images
            add(lambda f: has_images(f.ctx.request.chat) == want_images)
        if when.response_format is not None:
            add(_response_format_predicate(when.response_format))
        if when.prompt_tokens is not None:
            tokens_range = when.prompt_tokens
            add(lambda f: in_range(f.prompt_tokens, tokens_range))
        if when.exceeds_local_context is not None:
            want_exceeds = when.exceeds_local_context

            def exceeds(f: RequestFeatures) -> bool:
                wanted = f.ctx.request.max_new_tokens or 0
                return (f.prompt_tokens + wanted > local_context_tokens) == want_exceeds

            add(exceeds)
        if when.pii is not None:
            kinds = expand_kinds(as_list(when.pii))
            self.pii_kinds = kinds
            add(lambda f: bool(f.pii(kinds)))
        if when.score is not None:
            score_range = when.score
            add(lambda f: f.has_scorer and in_range(f.score(), score_range))
        if when.familiarity is not None:
            familiarity_range = when.familiarity
            add(lambda f: (v := f.familiarity()) is not None and in_range(v, familiarity_range))

    def matches(self, features: RequestFeatures) -> bool:
        return all(p(features) for p in self.predicates)


def _header_predicate(name: str, pattern: re.Pattern[str]) -> Predicate:
    return lambda f: (v := f.header(name)) is not None and pattern.fullmatch(v.strip()) is not None


def _response_format_predicate(value: bool | str | list[str]) -> Predicate:
    if isinstance(value, bool):
        want = value
        return lambda f: (_response_format_type(f) not in (None, "text")) == want
    kinds = compile_globs(as_list(value))
    return lambda f: (t := _response_format_type(f)) is not None and kinds.fullmatch(t) is not None

"""Explicit feedback: `POST /v1/feedback` with `{"request_id": str, "ok": bool}` records a one-sided label for
the tier that served the request (the other tier's column is null). Only the tenant that made the request may
rate it, once; an unknown id, another tenant's id and a private prompt all answer the same 404.
"""

from __future__ import annotations

import msgspec

from gateway.errors import GatewayError, InvalidRequest
from gateway.learning.labels import LabelSink, hash_tenant, label_row
from gateway.learning.metrics import LearningMetrics
from gateway.learning.privacy import PrivacyGuard
from gateway.learning.recent import RecentRequests


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    ok: bool


class UnknownRequest(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class AlreadyRated(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"


def parse_feedback(body: bytes) -> FeedbackBody:
    """Decode a feedback body; InvalidRequest (400) naming the offending field."""
    try:
        parsed = msgspec.json.decode(body, type=FeedbackBody, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = "ok" if "`$.ok`" in message else "request_id" if "`$.request_id`" in message else None
        if "missing required field" in message:
            param = message.rsplit("`", 2)[-2]
        raise InvalidRequest(f"Invalid feedback body: {message}", param=param, code="invalid_feedback") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Feedback body is not valid JSON: {exc}", code="invalid_json") from None
    if not parsed.request_id or len(parsed.request_id) > 128:
        raise InvalidRequest("request_id must be 1-128 characters.", param="request_id", code="invalid_feedback")
    return parsed


class FeedbackDesk:
    """Turns feedback calls into one-sided label rows."""

    def __init__(self, recent: RecentRequests, sink: LabelSink, metrics: LearningMetrics, privacy: PrivacyGuard,
                 tenant_salt: str = "") -> None:
        self.recent = recent
        self.sink = sink
        self.metrics = metrics
        self.privacy = privacy
        self.tenant_salt = tenant_salt

    async def record(self, body: bytes, tenant: str) -> dict[str, object]:
        """Record one feedback call by `tenant`; the label row written. Raises the error the caller must see."""
        try:
            feedback = parse_feedback(body)
        except InvalidRequest:
            self.metrics.feedback.labels("invalid").inc()
            raise
        item = await self.recent.lookup(feedback.request_id)
        if item is None or item.tenant != tenant or item.private or self.privacy.text_is_private(item.prompt):
            self.metrics.feedback.labels("unknown_request").inc()
            raise UnknownRequest(
                f"No recent request {feedback.request_id!r} of yours to rate.", param="request_id",
                code="request_not_found",
            )
        if not await self.recent.mark_rated(feedback.request_id):
            self.metrics.feedback.labels("duplicate").inc()
            raise AlreadyRated(f"Request {feedback.request_id!r} is already rated.", param="request_id",
                               code="already_rated")
        local = item.served_tier != "upstream"  # local or a named SLM tier: the weak side
        row = label_row(
            prompt=item.prompt,
            weak_correct=feedback.ok if local else None,
            strong_correct=None if local else feedback.ok,
            source="feedback",
            request_id=item.request_id,
            tenant_hash=hash_tenant(tenant, self.tenant_salt),
            served_tier=item.served_tier,
            local_model=item.local_model,
            upstream_model=item.upstream_model,
            judge_model=None,
            router_score=item.router_score,
        )
        await self.sink.append(row)
        self.metrics.labels.labels("feedback").inc()
        self.metrics.feedback.labels("recorded").inc()
        return row

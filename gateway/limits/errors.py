"""`LimitExceeded`: the 429 a key or team over its cap gets, in OpenAI's shape and with its headers."""

from __future__ import annotations

from gateway.errors import GatewayError


class LimitExceeded(GatewayError):
    """429 over a rate limit (`rate_limit_exceeded`), a budget (`budget_exceeded`), or with the limit store down
    and fail-closed (`limits_unavailable`). Never recoverable: another tier must not answer it instead."""

    status_code = 429
    error_type = "rate_limit_error"
    recoverable = False


class NotPermitted(GatewayError):
    """403: the key may not use this tier or model."""

    status_code = 403
    error_type = "permission_error"

"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right HTTP status."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class GatewayError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields.

    `recoverable` says whether another tier may answer the request instead (a tier failure, as opposed to an
    error the client caused); the dispatcher falls back on it.
    """

    status_code: int = 500
    error_type: str = "server_error"
    recoverable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        recoverable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}
        if recoverable is not None:
            self.recoverable = recoverable

    def body(self) -> bytes:
        """The JSON error body."""
        return error_json(self.message, self.error_type, self.param, self.code)


def error_json(message: str, error_type: str, param: str | None = None, code: str | None = None) -> bytes:
    """Encode an OpenAI-shaped error body."""
    return msgspec.json.encode(ErrorEnvelope(ErrorBody(message, error_type, param, code)))


class InvalidRequest(GatewayError):
    """400: the request is malformed or asks for something impossible."""

    status_code = 400
    error_type = "invalid_request_error"


class RequestTooLarge(InvalidRequest):
    """413: the body is over `max_body_bytes`."""

    status_code = 413


class AuthenticationFailed(GatewayError):
    """401: missing or wrong gateway API key."""

    status_code = 401
    error_type = "authentication_error"


class RateLimited(GatewayError):
    """429: the local tier's queue is full."""

    status_code = 429
    error_type = "rate_limit_error"
    recoverable = True


class TierUnavailable(GatewayError):
    """A tier cannot answer now (down, timed out, overloaded); the router may fall back to another tier."""

    status_code = 502
    error_type = "upstream_error"
    recoverable = True

    def __init__(self, message: str, *, kind: str = "connect", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.kind = kind


class UpstreamStatusError(GatewayError):
    """The upstream answered with an error status; its status and (OpenAI-shaped) body pass back to the client.

    Recoverable (another tier may answer) for a 5xx or a 429.
    """

    def __init__(self, status_code: int, payload: bytes, message: str) -> None:
        super().__init__(
            message, status_code=status_code, error_type="upstream_error",
            recoverable=status_code >= 500 or status_code == 429,
        )
        self.payload = payload

    def body(self) -> bytes:
        return self.payload

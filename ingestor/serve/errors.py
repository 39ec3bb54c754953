"""The errors the query side answers with: one class, its HTTP status and a machine-readable
`type`, rendered as `{"error", "type", "detail"}` by `app`."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server answers with `status` and `{"error": message, "type": kind, "detail": detail}`."""

    def __init__(
        self, status: int, kind: str, message: str, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.detail = status, kind, message, detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "type": self.kind, "detail": self.detail}


def invalid(message: str, detail: str = "") -> ApiError:
    """422: the request is well-formed JSON of the wrong shape."""
    return ApiError(422, "invalid_request", message, detail)


def too_large(kind: str, message: str, detail: str = "") -> ApiError:
    """413: the request is over one of the serve.max_* limits."""
    return ApiError(413, kind, message, detail)

"""What goes wrong in a client's request, and the error bodies of the OpenAI and TGI APIs."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """The client sent something we cannot serve; `status` and `param` go into the error body."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        code: str = "invalid_request",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def tgi_error_body(message: str, code: str) -> dict[str, Any]:
    """TGI's error shape (what huggingface_hub's client reads on TGI routes)."""
    return {"error": message, "error_type": code}

"""One error shape: `{"error": {"code", "message"}}` for every HTTP answer that is not a success, and
the `error` event (same code and message) in turn and WebSocket streams.

FastAPI's own 404/405/422 answers (`{"detail": ...}`) are rewritten into it, so a client (or a probe
trying `../../etc/passwd`) always gets a code it can act on.
"""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import metrics
from serve_app.events import Error

_CODES = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}


def error(code: str, message: str) -> Error:
    """The `error` event of a stream (a turn, a WebSocket session), counted by code."""
    metrics.count_error(code)
    return Error(code=code, message=message)


def error_body(code: str, message: str) -> dict:
    """The JSON body of every HTTP error answer."""
    return {"error": {"code": code, "message": message}}


def http_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.count_error(code)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, f"http_{exc.status_code}")
        return http_error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return http_error(422, "invalid_request", "the request does not match the API")

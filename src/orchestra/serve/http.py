"""What both servers (`orchestra serve`, `orchestra serve-model`) share around their routes: the guard layers and
the error handlers that give every failure, unknown routes and methods included, the OpenAI error shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from orchestra.serve.auth import AuthMiddleware, KeyRing
from orchestra.serve.limits import BodyLimitMiddleware
from orchestra.serve.schema import RequestError, error_body

log = logging.getLogger("orchestra.serve")


def guarded(app: FastAPI, keys: KeyRing, max_body_bytes: int) -> Any:
    """`app` behind API keys (outermost: nothing is read for a caller without a key), then the body-size cap."""
    install_error_handlers(app)
    return BodyLimitMiddleware(AuthMiddleware(app, keys), max_body_bytes)


def error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.kind, exc.code, exc.param), exc.status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}", kind,
                                       exc.status_code), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid request", "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(error_body("Internal server error.", "server_error"), 500)

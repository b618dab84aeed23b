"""What the verifier's HTTP route refuses before it parses a request, and how it words a refusal.

- A body over the limit gets 413 whether it declares its length or streams it in chunks: the bytes are counted as
  they arrive, and reading stops at the limit (a declared length only is not enough).
- A malformed body gets 422 naming each field (`loc`) and saying what is wrong (`msg`), never echoing the input
  back: the answer stays small, and a NaN or Infinity the client sent cannot turn the answer into invalid JSON.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _refusal(status: int, loc: list, msg: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": msg, "type": kind}]})


class BodyLimit:
    """Pure ASGI middleware: reads at most `max_bytes` of a request body, then hands the body on (or 413s)."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _refusal(413, ["body"], f"the body exceeds {self.max_bytes} bytes", "too_large")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:  # a chunked body: stop reading here
                await too_big(scope, receive, send)
                return
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _finite(value: object) -> object:
    """Drop what JSON cannot carry (NaN, Infinity) from a validation error's context."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """422 naming each field, without the input that was sent."""
    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", "")),
               **({"ctx": {k: _finite(v) for k, v in e["ctx"].items()}} if e.get("ctx") else {})}
              for e in err.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)

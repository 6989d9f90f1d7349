"""JSON logs with a request id (API v1.4).

* :class:`RequestIdMiddleware` gives every HTTP request an id: the caller's ``X-Request-ID`` when it
  is a plausible id (1–64 characters of ``A-Z a-z 0-9 . _ -``), else a new one (32 hex). The id is
  echoed in the response's ``X-Request-ID`` header, is the reference of a 500 answer, and is on
  every log line written while the request runs.
* :func:`configure_logging` writes the ``triage`` loggers as one JSON object per line on stderr:
  ``time``, ``level``, ``logger``, ``message``, ``request_id`` (when in a request) and, for an
  exception, its type and traceback. Messages never carry a token or a request body: the code
  logs ids, types and counts only (tokens are compared, never logged; bodies are never logged).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import uuid
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "triage_request_id", default=None
)


def current_request_id() -> str | None:
    """The id of the request being handled (``None`` outside a request)."""
    return _request_id.get()


class RequestIdMiddleware:
    """ASGI middleware: assign the request id, expose it to logs, echo it in the response."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if given and _VALID_ID.match(given) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_HANDLER_NAME = "triage-json"


def configure_logging(level: int = logging.INFO, stream: Any = None) -> None:
    """JSON lines on stderr for the ``triage`` loggers (once per process)."""
    logger = logging.getLogger("triage")
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)

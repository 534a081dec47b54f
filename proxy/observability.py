"""Logs and request ids: the service's own log lines and the access log, as JSON lines or as readable text.

One setting (``LOG_FORMAT``) chooses: ``json`` (one object per line, for log collectors), ``text`` (for people), or
``auto``: text when stdout is a terminal, else JSON. Both the app and the HTTP front (for the answers it gives
itself) write access entries through ``log_access``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

access_log = logging.getLogger("classifyobjects.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SERVICE_LOGGERS = ("proxy", "converter", "classifyobjects")


def request_id(offered: str | None) -> str:
    """The client's X-Request-ID when it is sane (letters, digits, ``._:-``, at most 128), else a new one."""
    return offered if offered and _REQUEST_ID.match(offered) else uuid.uuid4().hex


def log_access(entry: dict[str, Any]) -> None:
    """Write one access-log entry (the caller builds it with ``access_entry``).

    The record is made and handled directly: ``Logger.info`` would also walk the stack for the caller's file and
    line (``findCaller``), which an access entry never shows, on every request.
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    args = (entry.get("method"), entry.get("path"), entry.get("status"))
    record = access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "%s %s %s", args, None, extra={"entry": entry}
    )
    access_log.handle(record)


_stamp: tuple[int, str] = (0, "")


def _now() -> str:
    """The local time to the second, ``%Y-%m-%dT%H:%M:%S%z``: formatted once a second, not for every entry."""
    global _stamp  # noqa: PLW0603  # one (second, text) pair, replaced whole: no lock needed
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second)))
    return _stamp[1]


def access_entry(
    *,
    request_id: str,
    remote_addr: str | None,
    method: str,
    path: str,
    route: str,
    status: int,
    seconds: float,
    request_bytes: int,
    response_bytes: int,
    user_agent: str,
    error: str | None = None,
) -> dict[str, Any]:
    """The fields of one access-log line. Never the body, never the query string (it may hold a key)."""
    entry: dict[str, Any] = {
        "time": _now(),
        "request_id": request_id,
        "remote_addr": remote_addr,
        "method": method[:16],
        "path": path[:512],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "user_agent": user_agent[:200],
    }
    if error is not None:
        entry["error"] = error
    return entry


_encode_line = json.JSONEncoder(separators=(",", ":"), default=str).encode  # made once, not per line


class JsonLines(logging.Formatter):
    """Access entries as they are; other records as ``{"time", "level", "logger", "message"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = getattr(record, "entry", None)
        if entry is None:
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
        return _encode_line(entry)


class ReadableText(logging.Formatter):
    """``time LEVEL logger: message``; access entries as ``METHOD path status duration size id``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        entry = getattr(record, "entry", None)
        if entry is not None:
            error = f"  {entry['error']}" if entry.get("error") else ""
            return (
                f"{stamp} {entry['method']} {entry['path']} -> {entry['status']} {entry['duration_ms']} ms "
                f"{entry['response_bytes']} B [{entry['request_id']}]{error}"
            )
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Send the service's own loggers and the access log to stdout in the chosen format (once per process)."""
    chosen = log_format if log_format in ("json", "text") else ("text" if sys.stdout.isatty() else "json")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ReadableText() if chosen == "text" else JsonLines())
    numeric = logging.getLevelName(level.upper())
    for name in _SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_classifyobjects", False)]:
            logger.removeHandler(old)
        handler._classifyobjects = True  # type: ignore[attr-defined]  # marks ours, so reconfiguring replaces it
        logger.addHandler(handler)
        logger.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
        logger.propagate = False
    access_log.setLevel(logging.INFO)  # the access log is always on, whatever LOG_LEVEL says

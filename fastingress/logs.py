"""Logging set-up: JSON lines (orjson) or text, a TRACE level, and the fixed field vocabulary.

Context goes in `extra=` using only these keys, so that log lines can be queried the same way
everywhere: kind, namespace, object (the object's name: `name` is taken by LogRecord), host, path,
route, upstream, endpoint, generation, worker, reason, duration_ms, origin, count. Arguments are
%-style so nothing is formatted unless emitted.
Never log secrets (certificate or key bodies).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

FIELDS = ("kind", "namespace", "object", "host", "path", "route", "upstream", "endpoint", "generation",
          "worker", "reason", "duration_ms", "origin", "count")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the vocabulary fields present, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the vocabulary fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={record.__dict__[k]}" for k in FIELDS if record.__dict__.get(k) is not None)
        line = f"{base} {extras}" if extras else base
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Configure the root logger to write to stderr (stdout is for command output)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(TRACE if level.upper() == "TRACE" else getattr(logging, level.upper(), logging.INFO))

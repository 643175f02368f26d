"""The worker's log format: Faust's text lines, or one JSON object per line for log pipelines.

Errors about an event carry its id (`extra={"event_id": ...}`), a field of its own in JSON.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """`{"at", "level", "logger", "message", "event_id"?, "error"?}` on one line.

    >>> record = logging.LogRecord("agents.emit", logging.WARNING, "", 0, "dead letter %s", ("x",),
    ...                            None)
    >>> record.created, record.event_id = 0.0, "evt-1"
    >>> print(JsonFormatter().format(record))
    {"at": "1970-01-01T00:00:00+00:00", "level": "warning", "logger": "agents.emit", \
"message": "dead letter x", "event_id": "evt-1"}
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event_id = getattr(record, "event_id", None)
        if event_id:
            document["event_id"] = event_id
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def json_logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for Faust's `logging_config` setting. The handler writes
    to the real stderr: the worker redirects `sys.stdout` and `sys.stderr` into logging."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.__stderr__",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }

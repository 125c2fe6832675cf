"""Structured logs: JSON lines on stderr (or console-friendly lines on a terminal).

Every line is one JSON object with ``ts``, ``level``, ``logger``, ``event`` (what happened) and,
where the line is about a bus event, its ``seq`` and ``type`` (pass them as keywords). Heartbeats
and checks are logged at DEBUG only: an INFO line costs ~9 us, a filtered one ~0.2 us.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(level: str | None = None, json: bool | None = None, service: str | None = None) -> None:
    level = (level or os.environ.get("LVSBUS_LOG_LEVEL", "info")).lower()
    if json is None:
        json = os.environ.get("LVSBUS_LOG_FORMAT", "json" if not sys.stderr.isatty() else "console") == "json"
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

"""Structured logging, configured once at the process edge.

JSON lines when not attached to a terminal (production, CI), pretty console output otherwise.
Standard-library loggers (Faust, aiokafka) are routed through the same renderer.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(fmt: str) -> structlog.typing.Processor:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer()


def stdlib_handler(fmt: str = "auto") -> logging.Handler:
    """A stderr handler that renders stdlib records like structlog events."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _renderer(fmt),
            ],
        )
    )
    return handler


def logging_config(level: str = "INFO", fmt: str = "auto") -> dict:
    """A `dictConfig` for processes whose framework configures logging itself (Faust's Worker)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"structlog": {"()": f"{__name__}.stdlib_handler", "fmt": fmt}},
        "root": {"handlers": ["structlog"], "level": level.upper()},
    }


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and the root stdlib logger."""
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [stdlib_handler(fmt)]
    root.setLevel(level.upper())

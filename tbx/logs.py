"""Logging: loguru, one line per event, the actor on every line; JSON lines in production."""

from __future__ import annotations

import sys

from loguru import logger

FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{extra[actor]: <16}</cyan> {message}"


def _format(record: dict) -> str:  # type: ignore[type-arg]
    rid = " <dim>[{extra[request_id]}]</dim>" if record["extra"].get("request_id") else ""
    return FORMAT + rid + "\n{exception}"


def setup_logging(level: str = "INFO", *, json: bool = False) -> None:
    logger.remove()
    logger.configure(extra={"actor": "tbx", "request_id": ""})
    if json:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr, level=level, format=_format, backtrace=False, diagnose=False, colorize=sys.stderr.isatty()
        )

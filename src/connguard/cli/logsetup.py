"""Logging for the daemons: to stderr, with a timestamp on a terminal or in a file; without one
under journald (which stamps every line itself), with the syslog priority prefix journald reads
(``<3>`` for an error) so ``journalctl -p err`` works; or one JSON object a line
(``--log-format json``) for a log shipper.

Under systemd, ``$JOURNAL_STREAM`` holds the device and inode of the stream journald gave the
service; it is only believed when stderr is still that stream (systemd.exec(5)): a child whose
stderr was redirected elsewhere inherits the variable but not the journal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s %(message)s"
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
QUIET = ("httpx", "alembic")  # one line per request / a dozen "setup plugin" lines on each start


def stderr_is_journal(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        # every line of a traceback gets the prefix: journald splits on newlines
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
                "pid": record.process}
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def setup(level: str, fmt: str = "text", environ=None) -> str:
    """Configure the root logger (uvicorn's loggers propagate to it); returns the style in use:
    "text", "journal" or "json"."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        style, formatter = "json", JsonFormatter()
    elif stderr_is_journal(environ):
        style, formatter = "journal", JournalFormatter(JOURNAL_FORMAT)
    else:
        style, formatter = "text", logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    return style


def set_level(level: str) -> None:
    value = getattr(logging, level.upper())
    logging.getLogger().setLevel(value)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.DEBUG if value <= logging.DEBUG else logging.WARNING)

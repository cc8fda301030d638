"""The event log's JSON form (``lbctl serve --log-format json``): one object per line.

Events are state changes, reloads, admin actions and errors, on stderr. Fields: ``time``
(UTC, ISO 8601), ``level``, ``logger``, ``message``, ``exception`` when there is one, and
``worker`` (its index) on a line written by one of the workers of an instance.
"""

from __future__ import annotations

import json
import logging

from lbctl.observe.access_log import iso_time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": iso_time(record.created), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        worker = getattr(record, "worker", None)
        if worker is not None:
            doc["worker"] = worker
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=True, default=str)

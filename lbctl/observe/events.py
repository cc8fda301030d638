"""The event log's JSON form (``lbctl serve --log-format json``): one object per line.

Events are state changes, reloads, admin actions and errors, on stderr. Every line has
``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and ``exception`` when there
is one. Lines a log pipeline filters on also carry ``event`` and, where they apply, ``pool``,
``backend``, ``state`` and ``reason`` (and a few more, such as ``address`` or ``config``).
The code that logs passes them as ``extra={...}``, so the text form is unchanged and no
package needs to import this one.

Events: ``listening``, ``admin_listening``, ``stopping``, ``stopped``, ``reloaded``,
``reload_rejected``, ``backend_state`` (a health flip, an ejection or its end: ``state``
is ``up``, ``down`` or ``ejected``), ``ejection_refused``, ``admin_action`` (``state``: the
new admin state, ``weight``, or ``added``/``leaving``/``removed`` for run-time membership),
``discovery`` (a pool's lookups: ``state`` ``failing``, ``ok`` or ``empty``, with
``source``, ``target``, ``reason``, and who joined or left), ``backend_error`` (a failed
connect or TLS handshake, once per backend and cause), ``store_state`` (the rate-limit store up or down: ``store`` is its
URL without a password, ``state`` ``up`` or ``down``, with ``reason`` and ``on_error`` when
down), ``tls_reloaded``, ``tls_reload_rejected``, ``access_log_reopened``,
``pid_file_stale``, ``config_warning``.
"""

from __future__ import annotations

import json
import logging

from lbctl.observe.access_log import iso_time

# What every LogRecord has; anything else on a record came from ``extra`` and is an event field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": iso_time(record.created), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=True, default=str)

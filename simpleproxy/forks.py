"""Which process this is, cheaply: a counter bumped in every child after ``fork()``.

Background threads (the access-log flusher, health checks) are started once
per process, so that pre-forking servers (gunicorn, uWSGI) get them in each
worker. Comparing against ``os.getpid()`` on every request would cost a system
call each time; this counter costs a global lookup. Windows has no fork: there
the counter simply stays 0.
"""

from __future__ import annotations

import os

generation = 0


def _forked() -> None:
    global generation
    generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

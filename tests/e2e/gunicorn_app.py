"""A WSGI app for gunicorn --preload, for kidreaper's end-to-end tests. Stdlib only.

At import (in the arbiter, before the fork) it builds a dict of ~200 MB of str objects, so every
worker inherits it copy-on-write. Routes (every response is one line of JSON naming the worker's pid):
  /ok                 nothing
  /read?items=N       looks up N entries (a moving window per worker): each lookup increments the
                      key's and the value's refcount, which unshares their pages without growth
  /leak?mb=N          appends N MB of bytes to a module-level list that is never freed
  /slow?ms=N          sleeps N ms
Any route given ?pid=P does nothing unless it is served by worker P: it answers 421 with its own
pid, so a client can aim work at one worker by retrying.

Environment: E2E_ITEMS (entries, default 700000), E2E_MAX_LIFETIME (seconds, default 600: the
arbiter sends itself SIGTERM then, so nothing outlives a killed test driver).

    gunicorn --preload --workers 3 --worker-class sync --bind 127.0.0.1:PORT --pid FILE \
             --chdir tests/e2e gunicorn_app:app
"""
import json
import os
import signal
import threading
import time
from urllib.parse import parse_qs

ITEMS = int(os.environ.get("E2E_ITEMS", "700000"))

# ~270 bytes per entry: a 60-byte key, a 210-byte value (pymalloc) and the dict's slot.
DATA = {}
for _i in range(ITEMS):
    DATA["k%07d" % _i] = "%08d:" % _i + "abcdefghij" * 15
KEYS = list(DATA)
del _i

LEAK = []
_cursor = 0


def _stop_arbiter_later(seconds, arbiter_pid):
    def stop():
        time.sleep(seconds)
        if os.getpid() == arbiter_pid:
            os.kill(arbiter_pid, signal.SIGTERM)

    threading.Thread(target=stop, name="max-lifetime", daemon=True).start()


_stop_arbiter_later(int(os.environ.get("E2E_MAX_LIFETIME", "600")), os.getpid())


def _param(query, name, default):
    values = query.get(name)
    if values and values[0].isdigit():
        return int(values[0])
    return default


def _read(items):
    global _cursor
    length = 0
    for _ in range(items):
        value = DATA[KEYS[_cursor]]  # refcount writes on key and value
        length += len(value)
        _cursor = (_cursor + 1) % len(KEYS)
    return length


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ.get("PATH_INFO", "/")
    pid = os.getpid()
    target = _param(query, "pid", 0)
    status = "200 OK"
    if target and target != pid:
        status, body = "421 Misdirected Request", {"pid": pid, "op": "skip"}
    elif path == "/ok":
        body = {"pid": pid, "op": "ok", "items": len(DATA)}
    elif path == "/read":
        items = _param(query, "items", 10000)
        body = {"pid": pid, "op": "read", "items": items, "bytes": _read(items)}
    elif path == "/leak":
        mb = _param(query, "mb", 2)
        LEAK.append(b"L" * (mb * 1024 * 1024))
        body = {"pid": pid, "op": "leak", "mb": mb, "leaked": len(LEAK)}
    elif path == "/slow":
        ms = _param(query, "ms", 1000)
        time.sleep(ms / 1000)
        body = {"pid": pid, "op": "slow", "ms": ms}
    else:
        status, body = "404 Not Found", {"pid": pid, "op": "unknown"}
    payload = (json.dumps(body, sort_keys=True) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]

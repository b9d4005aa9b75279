"""A WSGI app for gunicorn --preload, for kidreaper's end-to-end tests. Stdlib only.

At import (in the arbiter, before the fork) it builds a dict of ~200 MB of str objects, so every
worker inherits it copy-on-write. Routes (every response is one line of JSON naming the worker's pid):
  /ok                 nothing
  /read?items=N       looks up N entries (a moving window per worker): each lookup increments the
                      key's and the value's refcount, which unshares their pages without growth
  /read?...&churn=M   also builds and drops M small lists, held together for the request: enough
                      allocations for the cyclic GC to run, and survivors enough for it to run
                      full collections, which walk every tracked object (the inherited ROWS too)
  /leak?mb=N          appends N MB of bytes to a module-level list that is never freed
  /leak?kb=N          the same with N KiB (kb wins over mb)
  /slow?ms=N          sleeps N ms
Any route given ?pid=P does nothing unless it is served by worker P: it answers 421 with its own
pid, so a client can aim work at one worker by retrying.

Environment: E2E_ITEMS (entries, default 700000), E2E_MAX_LIFETIME (seconds, default 600: the
arbiter sends itself SIGTERM then, so nothing outlives a killed test driver), E2E_GC_ROWS (default
0: that many small lists, GC-tracked containers that no route reads, also built at import),
KR_GC_FREEZE=1 (gc.collect() then gc.freeze() at the end of import, so the workers' collections
skip everything preloaded; without it, only gc.collect()).

    gunicorn --preload --workers 3 --worker-class sync --bind 127.0.0.1:PORT --pid FILE \
             --chdir tests/e2e gunicorn_app:app
"""
import gc
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

# Containers are what the cyclic GC tracks (str, bytes and int are not; DATA holds only those).
# ~56 bytes each with its GC header, in pymalloc pools of their own; no route reads them.
ROWS = [[_n, None] for _n in range(int(os.environ.get("E2E_GC_ROWS", "0")))]

LEAK = []
_cursor = 0


def _stop_arbiter_later(seconds, arbiter_pid):
    def stop():
        time.sleep(seconds)
        if os.getpid() == arbiter_pid:
            os.kill(arbiter_pid, signal.SIGTERM)

    threading.Thread(target=stop, name="max-lifetime", daemon=True).start()


_stop_arbiter_later(int(os.environ.get("E2E_MAX_LIFETIME", "600")), os.getpid())


def _churn(lists):
    # A chain of small lists, held until the end so the collections see survivors. A chain, not
    # one big list of them: its item array would come from malloc, whose heap keeps what the
    # first requests grow it by (fresh memory that is no leak, but noise in the test).
    held = None
    for _ in range(lists):
        held = [held]
    return lists


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
        churn = _param(query, "churn", 0)
        if churn:
            body.update(churn=_churn(churn), frozen=GC_FROZEN,
                        collections=[generation["collections"] for generation in gc.get_stats()])
    elif path == "/leak":
        kb = _param(query, "kb", _param(query, "mb", 2) * 1024)
        LEAK.append(b"L" * (kb * 1024))
        body = {"pid": pid, "op": "leak", "kb": kb, "leaked": len(LEAK)}
    elif path == "/slow":
        ms = _param(query, "ms", 1000)
        time.sleep(ms / 1000)
        body = {"pid": pid, "op": "slow", "ms": ms}
    else:
        status, body = "404 Not Found", {"pid": pid, "op": "unknown"}
    payload = (json.dumps(body, sort_keys=True) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


# Both runs of the gc.freeze test start their workers from the same state: the preload collected.
gc.collect()
if os.environ.get("KR_GC_FREEZE") == "1":
    gc.freeze()  # Python 3.7+: everything tracked so far goes to the permanent generation
GC_FROZEN = gc.get_freeze_count()

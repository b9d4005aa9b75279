#!/usr/bin/env python3
"""End-to-end: `kidreaper reap` on real pre-fork servers (FCGI::ProcManager, gunicorn --preload).

For each server (fcgi_app.pl under FCGI::ProcManager with --server fcgi, gunicorn_app.py under
gunicorn --preload with --server gunicorn), each test on a fresh server with 4 children:

  test_1_recycle_under_load   client threads send /ok, /leak (children grow) and /slow?ms=1500..3000
                              while `kidreaper reap --limit L --stagger 3s` runs for --load-seconds.
                              Checks: >= 2 recycles, not one failed request, the manager lives,
                              every recycled child exited (gracefully) and was replaced, and from
                              the SERVER'S OWN LOG: child exits are staggered and never two
                              children are down at once (--max-concurrent 1).
  test_2_dry_run              the same load with --dry-run: recycle events with dry_run true, and
                              no child exits (the set of children in /proc never changes).
  test_3_graceful_mid_request a /slow?ms=3000 request is in flight at the only child over the
                              limit when kidreaper starts with --idle-timeout 1s: kidreaper must
                              signal it while busy, the request must still complete with 200, and
                              the child must exit afterwards.

    python3 tests/e2e/test_reap_servers.py --kidreaper build/kidreaper [-v] [unittest args]
    python3 tests/e2e/test_reap_servers.py --kidreaper build/kidreaper GunicornReap.test_2_dry_run

Server start, /proc readers and the FastCGI client come from test_diagnose_servers.py (imported,
not copied). Needs root only because kidreaper does. Everything listens on 127.0.0.1; servers run
in their own session and their process group is killed at the end (they end themselves after a
maximum lifetime anyway); kidreaper is stopped with SIGTERM (SIGKILL if it does not stop).
A watchdog (--timeout, 230 s by default) bounds the whole run.

Times: kidreaper's events carry their own wall-clock "time" (ms). The servers' log lines (gunicorn's
"Booting worker with pid: N" / "Worker exiting (pid: N)", FCGI::ProcManager's "server (pid N)
started" / "server (pid N) exited with status S") have no usable timestamps (gunicorn's are whole
seconds, FCGI::ProcManager prints none), so a thread follows the server's log file every 20 ms and
stamps each line with the wall-clock time it appeared.
"""
import argparse
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, E2E_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import test_diagnose_servers as diag  # noqa: E402  (servers, /proc readers, FastCGI client)

MiB = 1024 * 1024
CHILDREN = diag.CHILDREN  # diag's Server waits for exactly this many children
STAGGER = 3.0             # --stagger, seconds
STAGGER_TOLERANCE = 0.5   # server-log stamps are taken by polling; scheduling noise
LOAD_THREADS = 4
LEAK_MB = 4
LOAD_LIMIT_MB = 20        # the load test's limit: a fresh child's private + this
DRY_LIMIT_MB = 12         # the dry run's: lower, so children cross it early
GRACEFUL_LIMIT_MB = 16    # the graceful test's; its target child is leaked 32 MB over fresh
SLOW_MS = (1500, 3000)
NANOSLEEP_SYSCALLS = {"35", "230"}  # x86_64 nanosleep, clock_nanosleep: a /slow request sleeping


class Options:
    kidreaper = None
    timeout = 230
    load_seconds = 40
    dry_seconds = 18
    watchdog_fired = False


LIVE_REAPERS = []


def wall(stamp):
    """Seconds since the epoch of kidreaper's "2026-01-02T03:04:05.678Z"."""
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def clock(seconds):
    return datetime.datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]


def alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def private_of(pid):
    sample = diag.memory_of(pid)
    return sample.get("Private_Clean", 0) + sample.get("Private_Dirty", 0)


def syscall_of(pid):
    try:
        with open(f"/proc/{pid}/syscall") as syscall:
            return syscall.read().split()[0]
    except (OSError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# The server's own log, stamped as it grows

class LogFollower(threading.Thread):
    """Follows a log file (polling every 20 ms) and stamps each complete line with time.time()."""

    def __init__(self, path):
        super().__init__(name=f"follow-{os.path.basename(path)}", daemon=True)
        self.path = path
        self.lines = []  # (stamp, line)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def run(self):
        partial = ""
        with open(self.path, errors="replace") as log:
            while True:
                chunk = log.read()
                if chunk:
                    now = time.time()
                    partial += chunk
                    *complete, partial = partial.split("\n")
                    with self.lock:
                        self.lines.extend((now, line) for line in complete)
                elif self.stop_event.is_set():
                    return
                else:
                    self.stop_event.wait(0.02)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)

    def snapshot(self):
        with self.lock:
            return list(self.lines)


GUNICORN_PATTERNS = [
    ("start", re.compile(r"Booting worker with pid: (\d+)")),
    ("exit", re.compile(r"Worker exiting \(pid: (\d+)\)")),
    ("killed", re.compile(r"Worker with pid (\d+) was terminated due to signal (\d+)")),
]
FCGI_PATTERNS = [
    ("start", re.compile(r"FastCGI: manager \(pid \d+\): server \(pid (\d+)\) started")),
    ("exit", re.compile(r"FastCGI: manager \(pid \d+\): server \(pid (\d+)\) exited with status (-?\d+)")),
]


def server_events(lines, patterns):
    """[(stamp, kind, pid, extra, line)] from the server's log: kind start/exit/killed; extra is the
    exit status (FCGI's; 0 for gunicorn's graceful "Worker exiting"), the terminating signal
    (gunicorn's "killed"), else None."""
    events = []
    for stamp, line in lines:
        for kind, pattern in patterns:
            match = pattern.search(line)
            if match:
                extra = int(match.group(2)) if match.lastindex and match.lastindex >= 2 else None
                if kind == "exit" and extra is None:
                    extra = 0  # gunicorn's "Worker exiting": the worker's own, graceful exit
                events.append((stamp, kind, int(match.group(1)), extra, line))
                break
    return events


def exits_of(events):
    """{pid: (stamp, status_or_signal, line)} of children that went away, first report wins.
    gunicorn: "Worker exiting" (a graceful exit) or "was terminated due to signal" (not graceful)."""
    exits = {}
    for stamp, kind, pid, extra, line in events:
        if kind in ("exit", "killed") and pid not in exits:
            exits[pid] = (stamp, extra if kind == "exit" else f"signal {extra}", line)
    return exits


def fewest_alive(events, children):
    """The fewest children alive at once after the server first had `children`, replaying the
    server's start/exit lines in order, and the log line where that happened."""
    live = set()
    full = False
    fewest, where = None, None
    for _, kind, pid, _, line in events:
        if kind == "start":
            live.add(pid)
        elif pid in live:
            live.discard(pid)
        if len(live) >= children:
            full = True
        if full and (fewest is None or len(live) < fewest):
            fewest, where = len(live), line
    return fewest, where


# ---------------------------------------------------------------------------------------------
# Load

class Load:
    """LOAD_THREADS client threads, each sending one request at a time until stopped or bounded:
    /ok, /leak?mb=LEAK_MB and /slow?ms=1500..3000. Every request is recorded; a failure is anything
    but a complete 200 response whose JSON is the handler's (connection resets, truncated bodies,
    timeouts and other statuses included)."""

    def __init__(self, server, max_seconds, threads=LOAD_THREADS, max_requests=5000, seed=1):
        self.server = server
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.records = []
        self.threads = [threading.Thread(target=self._run, args=(seed * 100 + i,), daemon=True,
                                         name=f"load-{server.name}-{i}") for i in range(threads)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        """Stops sending; waits for the requests in flight (each is bounded by its timeout)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=40)
        return not any(thread.is_alive() for thread in self.threads)

    def _run(self, seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + self.max_seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= self.max_requests:
                    return
            draw = rng.random()
            if draw < 0.4:
                record = send(self.server, "/ok", "ok")
            elif draw < 0.7:
                record = send(self.server, f"/leak?mb={LEAK_MB}", "leak")
            else:
                ms = rng.randint(*SLOW_MS)
                record = send(self.server, f"/slow?ms={ms}", "slow", ms=ms)
            with self.lock:
                self.records.append(record)
            self.stop_event.wait(0.05)

    def snapshot(self):
        with self.lock:
            return list(self.records)


def send(server, path, op, ms=None, timeout=30.0):
    """One request; a record with start/end wall times, status, pid, and error (None when fine)."""
    record = {"path": path, "op": op, "start": time.time(), "status": None, "pid": None, "error": None}
    try:
        status, body = server.request(path, timeout=timeout)
        record["status"] = status
        record["pid"] = body.get("pid") if isinstance(body, dict) else None
        if status != 200:
            record["error"] = f"HTTP {status}: {body}"
        elif not isinstance(body, dict) or body.get("op") != op or (ms is not None and body.get("ms") != ms):
            record["error"] = f"unexpected body {body!r}"
    except Exception as error:  # resets, truncation (IncompleteRead, FastCgiError, bad JSON), timeouts
        record["error"] = repr(error)
    record["end"] = time.time()
    return record


def send_to(server, pid, path, op, ms=None, patience=20.0, timeout=30.0):
    """Aims a request at child pid (every other child answers 421 at once); the served record.
    Which idle worker wins a connection is the kernel's choice and can favour one worker for a
    while, so this retries for `patience` seconds, pausing a little between tries."""
    separator = "&" if "?" in path else "?"
    deadline = time.time() + patience
    attempts = 0
    while True:
        attempts += 1
        record = send(server, f"{path}{separator}pid={pid}", op, ms=ms, timeout=timeout)
        if record["status"] != 421:
            return record
        if time.time() >= deadline:
            record["error"] = f"never reached child {pid} in {attempts} attempts ({patience:.0f} s)"
            return record
        time.sleep(0.01 * min(attempts, 10))


# ---------------------------------------------------------------------------------------------
# kidreaper reap

class Reaper:
    """`kidreaper reap ... --log-format json`, its stdout read line by line as it comes."""

    def __init__(self, args, workdir):
        self.command = [Options.kidreaper, "reap", *args, "--log-format", "json"]
        self.stderr_path = os.path.join(workdir, f"kidreaper-{len(os.listdir(workdir))}.stderr")
        self.events = []
        self.bad_lines = []
        self.lock = threading.RLock()  # wait_for's predicate may call snapshot()
        self.changed = threading.Condition(self.lock)
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=stderr, text=True)
        LIVE_REAPERS.append(self)
        self.reader = threading.Thread(target=self._read, name="kidreaper-stdout", daemon=True)
        self.reader.start()
        self.returncode = None

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                event["_wall"] = wall(event["time"])
                event["_line"] = line
            except (ValueError, KeyError, TypeError):
                with self.lock:
                    self.bad_lines.append(line)
                continue
            with self.changed:
                self.events.append(event)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def snapshot(self, name=None):
        with self.lock:
            return [e for e in self.events if name is None or e.get("event") == name]

    def wait_for(self, predicate, timeout):
        """The first event for which predicate(event) is true, or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return None
                self.changed.wait(min(left, 0.25))

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM (SIGKILL after 10 s); the return code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        if not self.reader.is_alive():
            self.proc.stdout.close()
        self.returncode = self.proc.returncode
        if self in LIVE_REAPERS:
            LIVE_REAPERS.remove(self)
        return self.returncode

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as stderr:
                return stderr.read()
        except OSError:
            return ""

    def transcript(self, limit=80):
        with self.lock:
            lines = [e["_line"] for e in self.events] + [f"[not JSON] {b}" for b in self.bad_lines]
        if len(lines) > limit:
            lines = lines[:10] + [f"... {len(lines) - limit} lines left out ..."] + lines[-(limit - 10):]
        return "\n".join(lines)


_probe_result = None


def probe_reap():
    """None when the kidreaper binary has a usable `reap` command, else why not."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result or None
    binary = Options.kidreaper
    if not os.access(binary, os.X_OK):
        _probe_result = f"kidreaper binary {binary} is missing or not executable"
    else:
        try:
            run = subprocess.run([binary, "reap", "--help"], capture_output=True, text=True, timeout=20)
            if run.returncode != 0 or "--stagger" not in run.stdout or "--dry-run" not in run.stdout:
                _probe_result = (f"{binary} does not support `reap`: `reap --help` exited {run.returncode}\n"
                                 f"{run.stderr.strip() or run.stdout.strip()[:400]}")
            else:
                _probe_result = ""
        except (OSError, subprocess.TimeoutExpired) as error:
            _probe_result = f"cannot run {binary}: {error!r}"
    return _probe_result or None


# ---------------------------------------------------------------------------------------------
# Tests

class ReapTestMixin:
    server_class = None
    server_flag = None       # --server
    graceful_signal = None   # what the preset sends
    patterns = None          # the server's start/exit log lines

    def setUp(self):
        if Options.watchdog_fired:
            raise TimeoutError(f"[e2e] watchdog fired earlier (--timeout {Options.timeout}s)")
        problem = probe_reap()
        if problem:
            self.fail(f"kidreaper reap unusable: {problem}")
        self.reaper = None
        self.load = None
        self.server = self.server_class()
        self.addCleanup(self.server.cleanup)
        self.server.start(lifetime=Options.timeout + 60)
        self.follower = LogFollower(self.server.logfile)
        self.follower.start()
        self.addCleanup(self.follower.stop)
        self.addCleanup(self._stop_reaper_and_load)
        self.manager = self.server.manager_pid
        self.initial_children = diag.children_of(self.manager)
        self.assertEqual(len(self.initial_children), CHILDREN, self.server.log_tail())
        self.fresh_private = max(private_of(pid) for pid in self.initial_children)

    def _stop_reaper_and_load(self):
        if self.load is not None:
            self.load.stop()
        if self.reaper is not None:
            self.reaper.stop()

    def start_reaper(self, limit_mb, *extra):
        limit = self.fresh_private + limit_mb * MiB
        args = ["--pid", str(self.manager), "--server", self.server_flag, "--limit", str(limit),
                "--stagger", f"{int(STAGGER)}s", "--max-concurrent", "1", "--interval", "250ms", *extra]
        self.reaper = Reaper(args, self.server.workdir)
        start = self.reaper.wait_for(lambda e: e.get("event") == "start", timeout=20)
        self.assertIsNotNone(start, f"no start event from kidreaper{self.evidence()}")
        self.assertEqual(start.get("manager"), self.manager, f"start event{self.evidence()}")
        self.assertEqual(start.get("server"), self.server_flag, f"start event{self.evidence()}")
        self.assertEqual(start.get("signal"), self.graceful_signal, f"start event{self.evidence()}")
        return limit

    def stop_reaper(self):
        self.assertTrue(self.reaper.running(),
                        f"kidreaper ended on its own (exit {self.reaper.proc.returncode}){self.evidence()}")
        returncode = self.reaper.stop()
        self.assertEqual(returncode, 0, f"kidreaper exit status after SIGTERM{self.evidence()}")
        stops = self.reaper.snapshot("stop")
        self.assertTrue(stops and "TERM" in str(stops[-1].get("reason")), f"no stop event{self.evidence()}")

    def evidence(self, server_lines=40):
        """kidreaper's JSON lines, its stderr and the end of the server's (stamped) log."""
        parts = []
        if self.reaper is not None:
            parts.append(f"kidreaper: {' '.join(self.reaper.command)}\n{self.reaper.transcript()}")
            stderr = self.reaper.stderr().strip()
            if stderr:
                parts.append(f"kidreaper stderr:\n{stderr[-3000:]}")
        lines = self.follower.snapshot()[-server_lines:]
        parts.append(f"{self.server.name} log (stamped as it appeared):\n"
                     + "\n".join(f"{clock(stamp)} {line}" for stamp, line in lines))
        return "\n" + "\n".join(parts)

    def failures_text(self, failures, limit=8):
        return "\n".join(f"  {clock(r['start'])}..{clock(r['end'])} {r['path']} -> {r['error']}"
                         for r in failures[:limit])

    def wait_full(self, timeout=20):
        """The manager's children once it has CHILDREN again (bounded)."""
        deadline = time.monotonic() + timeout
        children = diag.children_of(self.manager)
        while len(children) != CHILDREN and time.monotonic() < deadline:
            time.sleep(0.1)
            children = diag.children_of(self.manager)
        return children

    def check_manager(self):
        self.assertTrue(alive(self.manager), f"manager {self.manager} is gone{self.evidence()}")
        self.assertIsNone(self.server.proc.poll(), f"server process ended{self.evidence()}")

    def check_recycle_events(self, recycles, limit, dry_run, known_children):
        for event in recycles:
            where = f"\nevent: {event['_line']}{self.evidence()}"
            pid = event.get("pid")
            self.assertNotEqual(pid, self.manager, f"kidreaper signalled the MANAGER{where}")
            self.assertIn(pid, known_children, f"kidreaper signalled {pid}, not a child of the manager{where}")
            self.assertEqual(event.get("signal"), self.graceful_signal, f"signal{where}")
            self.assertEqual(event.get("metric"), "private", f"metric{where}")
            self.assertEqual(event.get("limit"), limit, f"limit{where}")
            self.assertGreater(event.get("value", 0), limit, f"recycled under the limit{where}")
            self.assertEqual(event.get("private"), event.get("value"), f"value is not private{where}")
            for field in ("lifetime", "shared", "rss", "pss", "verdict", "reason", "idle"):
                self.assertIn(field, event, f"recycle event lacks {field}{where}")
            if dry_run:
                self.assertIs(event.get("dry_run"), True, f"dry run event without dry_run true{where}")
            else:
                self.assertNotIn("dry_run", event, f"dry_run on a real recycle{where}")

    def known_children(self, events):
        return set(self.initial_children) | {pid for _, kind, pid, _, _ in events if kind == "start"}

    # -- 1 -------------------------------------------------------------------------------------

    def test_1_recycle_under_load(self):
        """Recycling under load: >= 2 recycles, no failed request, staggered exits, one at a time."""
        load = self.load = Load(self.server, max_seconds=Options.load_seconds + 30, seed=1)
        load.start()
        limit = self.start_reaper(LOAD_LIMIT_MB)
        deadline = time.monotonic() + Options.load_seconds
        while time.monotonic() < deadline and self.reaper.running():
            time.sleep(0.5)
        self.assertTrue(load.stop(), "load threads did not finish")
        # Let the recycle in flight (if any) finish, then stop kidreaper.
        self.reaper.wait_for(lambda e: self._none_in_flight(), timeout=15)
        self.stop_reaper()
        children_after = self.wait_full()
        time.sleep(0.3)  # the last log lines
        self.follower.stop()

        records = load.snapshot()
        failures = [r for r in records if r["error"]]
        recycles = self.reaper.snapshot("recycle")
        events = server_events(self.follower.snapshot(), self.patterns)
        exits = exits_of(events)
        recycled = [e["pid"] for e in recycles]
        signal_at = {e["pid"]: e["_wall"] for e in recycles}
        gaps, lags = self._exit_gaps(recycled, exits, signal_at)
        in_flight_any, in_flight_victim = self._slow_in_flight(recycles, records)
        fewest, fewest_line = fewest_alive(events, CHILDREN)
        summary = (f"\n[{self.server.name}] load {Options.load_seconds}s: {len(recycles)} recycles "
                   f"(pids {recycled}), {len(records)} requests "
                   f"({sum(r['op'] == 'slow' for r in records)} slow, {sum(r['op'] == 'leak' for r in records)} "
                   f"leak), {len(failures)} failures; limit {limit / MiB:.1f} MiB private "
                   f"(fresh child {self.fresh_private / MiB:.1f} MiB); min gap between exits "
                   f"{min(gaps) if gaps else float('nan'):.2f}s (gaps {[round(g, 2) for g in gaps]}); "
                   f"exit lag after signal {[round(x, 2) for x in lags]}s; fewest children alive {fewest}; "
                   f"signals with slow requests in flight: {in_flight_any} (at the victim itself: "
                   f"{in_flight_victim}); idle at signal: {[e.get('idle') for e in recycles]}")
        print(summary, file=sys.stderr)
        where = f"{summary}{self.evidence()}"

        # Requests: every one complete and 200.
        self.assertGreater(len(records), 40, f"too few requests{where}")
        self.assertEqual(len(failures), 0, f"{len(failures)} of {len(records)} requests failed:\n"
                                   f"{self.failures_text(failures)}{where}")
        # kidreaper recycled, only children of the manager, gracefully, and never more.
        self.assertGreaterEqual(len(recycles), 2, f"fewer than 2 recycles{where}")
        self.check_recycle_events(recycles, limit, False, self.known_children(events))
        self.assertEqual(len(set(recycled)), len(recycled), f"a pid was recycled twice{where}")
        for name in ("escalate", "grace-expired", "replace-timeout", "manager-gone", "manager-restarted"):
            self.assertFalse(self.reaper.snapshot(name), f"unexpected {name} event{where}")
        self.assertFalse(self.reaper.bad_lines, f"non-JSON lines on stdout{where}")
        self.assertGreaterEqual(in_flight_any, 1, f"workload: no signal arrived with a slow request in flight{where}")
        # The server: manager alive, full again, recycled children gone, and nobody else gone.
        self.check_manager()
        self.assertEqual(len(children_after), CHILDREN, f"children after the run: {children_after}{where}")
        for pid in recycled:
            self.assertFalse(alive(pid) and pid in children_after, f"recycled child {pid} still alive{where}")
            self.assertIn(pid, exits, f"the server never logged the exit of recycled child {pid}{where}")
            status = exits[pid][1]
            self.assertEqual(status, 0, f"child {pid} did not exit gracefully: {exits[pid][2]}{where}")
        unexplained = sorted(set(exits) - set(recycled))
        self.assertFalse(unexplained, f"children exited that kidreaper did not recycle: {unexplained}{where}")
        # kidreaper saw each recycled child exit and be replaced (the last one may have been
        # signalled as it was being stopped).
        exited = {e["pid"] for e in self.reaper.snapshot("exited")}
        replaced = {e["pid"] for e in self.reaper.snapshot("replaced")}
        for pid in recycled[:-1]:
            self.assertIn(pid, exited, f"no exited event for {pid}{where}")
            self.assertIn(pid, replaced, f"no replaced event for {pid}{where}")
        # Staggering and --max-concurrent 1, from the server's own log: each exit follows its
        # signal, consecutive exits are --stagger apart (less whatever the earlier exit lagged
        # behind its signal: a request in flight at the victim delays its exit, and --stagger is
        # between signals), and never two children down at once.
        for pid in recycled:
            if pid in exits:
                self.assertGreaterEqual(exits[pid][0], signal_at[pid] - 0.25,
                                        f"child {pid} exited before kidreaper signalled it{where}")
        ordered = sorted((exits[pid][0], pid) for pid in recycled if pid in exits)
        for (first_at, first), (second_at, second) in zip(ordered, ordered[1:]):
            lag = max(0.0, first_at - signal_at[first])
            self.assertGreaterEqual(second_at - first_at, STAGGER - STAGGER_TOLERANCE - lag,
                                    f"server log: child {second} exited {second_at - first_at:.2f}s after "
                                    f"child {first} (its exit lagged its signal by {lag:.2f}s){where}")
        self.assertIsNotNone(fewest, f"server log: never saw {CHILDREN} children{where}")
        self.assertGreaterEqual(fewest, CHILDREN - 1,
                                f"server log: only {fewest} children alive at once at: {fewest_line}{where}")
        # ... and from kidreaper's own times: signals --stagger apart, each after the previous
        # child was replaced.
        for before, after in zip(recycles, recycles[1:]):
            self.assertGreaterEqual(after["_wall"] - before["_wall"], STAGGER - 0.1,
                                    f"signals {before['pid']} and {after['pid']} closer than --stagger{where}")
            done = [e["_wall"] for e in self.reaper.snapshot()
                    if e.get("event") in ("replaced", "replace-timeout") and e.get("pid") == before["pid"]]
            self.assertTrue(done and done[0] <= after["_wall"],
                            f"{after['pid']} signalled before {before['pid']} was replaced{where}")

    def _none_in_flight(self):
        events = self.reaper.snapshot()
        signalled = {e["pid"] for e in events if e.get("event") == "recycle"}
        done = {e["pid"] for e in events if e.get("event") in ("replaced", "replace-timeout")}
        return signalled <= done

    @staticmethod
    def _exit_gaps(recycled, exits, signal_at):
        ordered = sorted((exits[pid][0], pid) for pid in recycled if pid in exits)
        gaps = [b[0] - a[0] for a, b in zip(ordered, ordered[1:])]
        lags = [exits[pid][0] - signal_at[pid] for pid in recycled if pid in exits]
        return gaps, lags

    @staticmethod
    def _slow_in_flight(recycles, records):
        """Signals with a /slow request in flight anywhere, and at the victim itself."""
        anywhere = victim = 0
        for event in recycles:
            at = event["_wall"]
            flying = [r for r in records if r["op"] == "slow" and r["start"] < at < r["end"]]
            anywhere += bool(flying)
            victim += any(r["pid"] == event["pid"] for r in flying)
        return anywhere, victim

    # -- 2 -------------------------------------------------------------------------------------

    def test_2_dry_run(self):
        """--dry-run under the same load: recycle events with dry_run true, and no child exits."""
        load = self.load = Load(self.server, max_seconds=Options.dry_seconds + 30, seed=2)
        load.start()
        limit = self.start_reaper(DRY_LIMIT_MB, "--dry-run", "--idle-timeout", "1s")
        changes = []
        deadline = time.monotonic() + Options.dry_seconds
        while time.monotonic() < deadline and self.reaper.running():
            children = diag.children_of(self.manager)
            if children != self.initial_children:
                changes.append((time.time(), children))
            time.sleep(0.25)
        self.assertTrue(load.stop(), "load threads did not finish")
        self.stop_reaper()
        children_after = diag.children_of(self.manager)
        time.sleep(0.3)
        self.follower.stop()

        records = load.snapshot()
        failures = [r for r in records if r["error"]]
        recycles = self.reaper.snapshot("recycle")
        events = server_events(self.follower.snapshot(), self.patterns)
        exits = exits_of(events)
        summary = (f"\n[{self.server.name}] dry run {Options.dry_seconds}s: {len(recycles)} dry-run recycles "
                   f"(pids {[e['pid'] for e in recycles]}), {len(records)} requests, {len(failures)} failures, "
                   f"children {self.initial_children} -> {children_after}, exits in the server log: {sorted(exits)}")
        print(summary, file=sys.stderr)
        where = f"{summary}{self.evidence()}"

        self.assertGreaterEqual(len(recycles), 1, f"no dry-run recycle event{where}")
        self.check_recycle_events(recycles, limit, True, set(self.initial_children))
        pids = [e["pid"] for e in recycles]
        self.assertEqual(len(set(pids)), len(pids), f"a living child was reported twice in a dry run{where}")
        for name in ("exited", "replaced", "escalate", "grace-expired", "replace-timeout", "skip"):
            self.assertFalse(self.reaper.snapshot(name), f"unexpected {name} event in a dry run{where}")
        self.assertFalse(changes, f"the set of children changed during the dry run: {changes[:3]}{where}")
        self.assertEqual(children_after, self.initial_children, f"children changed{where}")
        self.assertFalse(exits, f"children exited during a dry run: {sorted(exits)}{where}")
        self.assertEqual(len(failures), 0, f"{len(failures)} requests failed:\n{self.failures_text(failures)}{where}")
        self.check_manager()

    # -- 3 -------------------------------------------------------------------------------------

    def test_3_graceful_mid_request(self):
        """A child busy with /slow?ms=3000 is signalled (after --idle-timeout 1s), and the request
        still completes with 200 before the child exits."""
        target = self.initial_children[0]
        for _ in range(4):  # 32 MB over a fresh child; the others stay fresh
            leaked = send_to(self.server, target, "/leak?mb=8", "leak")
            self.assertIsNone(leaked["error"], f"leaking into {target}: {leaked}")
        over = private_of(target) - self.fresh_private
        self.assertGreater(over, GRACEFUL_LIMIT_MB * MiB + 8 * MiB, f"workload: {target} grew by {over} bytes only")
        for pid in self.initial_children[1:]:
            self.assertLess(private_of(pid), self.fresh_private + GRACEFUL_LIMIT_MB * MiB - 8 * MiB,
                            f"workload: child {pid} is near the limit")

        slow = {}
        thread = threading.Thread(
            target=lambda: slow.update(send_to(self.server, target, "/slow?ms=3000", "slow", ms=3000)),
            name="slow-request", daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while syscall_of(target) not in NANOSLEEP_SYSCALLS and time.monotonic() < deadline:
            time.sleep(0.005)
        busy_since = time.time()
        self.assertIn(syscall_of(target), NANOSLEEP_SYSCALLS,
                      f"workload: child {target} is not sleeping in /slow (syscall {syscall_of(target)})")
        limit = self.start_reaper(GRACEFUL_LIMIT_MB, "--idle-timeout", "1s")
        recycle = self.reaper.wait_for(lambda e: e.get("event") == "recycle", timeout=10)
        thread.join(timeout=40)
        replaced = self.reaper.wait_for(lambda e: e.get("event") == "replaced" and e.get("pid") == target,
                                        timeout=15)
        self.stop_reaper()
        children_after = self.wait_full()
        time.sleep(0.3)
        self.follower.stop()

        events = server_events(self.follower.snapshot(), self.patterns)
        exits = exits_of(events)
        recycles = self.reaper.snapshot("recycle")
        busy = self.reaper.snapshot("busy")
        summary = (f"\n[{self.server.name}] graceful: child {target} busy from {clock(busy_since)}; "
                   f"signal {recycle and recycle.get('signal')} at {recycle and clock(recycle['_wall'])} "
                   f"(idle={recycle and recycle.get('idle')}); slow request "
                   f"{clock(slow['start']) if slow else '?'}..{clock(slow['end']) if slow else '?'} -> "
                   f"{slow.get('status')} {slow.get('error') or ''}; server-logged exit "
                   f"{clock(exits[target][0]) if target in exits else 'none'}")
        print(summary, file=sys.stderr)
        where = f"{summary}{self.evidence()}"

        self.assertIsNotNone(recycle, f"kidreaper did not recycle {target}{where}")
        self.assertEqual(recycle.get("pid"), target, f"kidreaper signalled the wrong child{where}")
        self.assertEqual(len(recycles), 1, f"more than one child recycled{where}")
        self.check_recycle_events(recycles, limit, False, set(self.initial_children))
        self.assertEqual(recycle.get("idle"), "timeout", f"the child was not signalled while busy{where}")
        self.assertTrue(any(e.get("pid") == target for e in busy), f"no busy event for {target}{where}")
        # The signal landed while the request was in flight ...
        self.assertTrue(slow, f"the slow request never finished{where}")
        self.assertEqual(slow.get("pid"), target, f"the slow request was served by another child{where}")
        self.assertLess(recycle["_wall"], slow["end"] - 0.2,
                        f"the signal did not arrive while the slow request was in flight{where}")
        # ... and the request still completed, whole and with 200, after its full 3 s.
        self.assertIsNone(slow.get("error"), f"the slow request failed: {slow.get('error')}{where}")
        self.assertEqual(slow.get("status"), 200, where)
        self.assertGreaterEqual(slow["end"] - busy_since, 2.5, f"the slow request was cut short{where}")
        # Then the child exited, gracefully, and was replaced.
        self.assertIn(target, exits, f"the server never logged the exit of {target}{where}")
        self.assertGreaterEqual(exits[target][0], slow["end"] - 0.25,
                                f"child {target} exited before its request completed{where}")
        self.assertEqual(exits[target][1], 0, f"child {target} did not exit gracefully: {exits[target][2]}{where}")
        self.assertFalse(alive(target) and target in children_after, f"{target} still alive{where}")
        self.assertIsNotNone(replaced, f"no replaced event for {target}{where}")
        self.assertEqual(len(children_after), CHILDREN, f"children after: {children_after}{where}")
        self.assertEqual(sorted(exits), [target], f"other children exited{where}")
        self.check_manager()


class FcgiProcManagerReap(ReapTestMixin, unittest.TestCase):
    server_class = diag.PerlFcgiServer
    server_flag = "fcgi"
    graceful_signal = "HUP"
    patterns = FCGI_PATTERNS


class GunicornReap(ReapTestMixin, unittest.TestCase):
    server_class = diag.GunicornServer
    server_flag = "gunicorn"
    graceful_signal = "TERM"
    patterns = GUNICORN_PATTERNS


# ---------------------------------------------------------------------------------------------

def stop_everything():
    for reaper in list(LIVE_REAPERS):
        try:
            reaper.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    diag.stop_all_servers()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--kidreaper", help="path to the kidreaper binary")
    parser.add_argument("--load-seconds", type=int, default=Options.load_seconds,
                        help="how long test_1 runs kidreaper under load")
    parser.add_argument("--dry-seconds", type=int, default=Options.dry_seconds, help="how long test_2 runs")
    parser.add_argument("--timeout", type=int, default=Options.timeout, help="watchdog for the whole run, seconds")
    args, rest = parser.parse_known_args()
    if not args.kidreaper:
        parser.print_usage(sys.stderr)
        print("error: --kidreaper PATH is required", file=sys.stderr)
        return 2
    Options.kidreaper = os.path.abspath(args.kidreaper)
    Options.load_seconds = args.load_seconds
    Options.dry_seconds = args.dry_seconds
    Options.timeout = args.timeout
    diag.Options.timeout = args.timeout

    return diag.run_tests_with_watchdog(
        Options, stop_everything, rest, "servers and kidreaper stopped")

if __name__ == "__main__":
    sys.exit(main())

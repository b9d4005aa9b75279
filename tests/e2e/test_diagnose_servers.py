#!/usr/bin/env python3
"""End-to-end: `kidreaper diagnose` on real pre-fork servers (FCGI::ProcManager, gunicorn --preload).

Each server starts with 4 children that inherit ~200 MB copy-on-write from the manager. The driver
aims requests at single children (every handler ignores a request carrying another child's pid
and answers 421), so each child has one role, and records which pid actually did what:
  read   only /read: unshares inherited pages, does not grow      -> expect "cow"
  leak   only /leak: 2 MB per request kept forever                -> expect "leak"
  mixed  both                                                     -> expect "leak" or "mixed"
  idle   nothing but 421 answers                                  -> expect "stable", "cow" or "unknown"
The same run samples /proc/PID/smaps_rollup itself (ground truth), checks that the workload did
what it should, and prints both side by side, so a failure says whether the server or kidreaper
was wrong.
A second window per server puts all the work in a burst at its start (60 x 512 KiB /leak to one
child, 30 /read to another), then idles: still "leak" and "cow". A last test runs gunicorn twice,
without and with gc.freeze() at the end of the preload, under the same /read load that makes the
workers' GC run full collections, and checks that the frozen run unshares at least 20% less.

    python3 tests/e2e/test_diagnose_servers.py --kidreaper build/userspace/kidreaper [-v] [unittest args]
    python3 tests/e2e/test_diagnose_servers.py --workload-only    # no kidreaper, no root: servers only

Needs root only because kidreaper does. Everything listens on 127.0.0.1; every server is stopped
(its process group killed) at the end, and ends itself after a maximum lifetime anyway.
"""
import argparse
import atexit
import collections
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, E2E_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fcgi_client  # noqa: E402

MiB = 1024 * 1024
CHILDREN = 4
ROLES = ("read", "leak", "mixed", "idle")
TICK_SECONDS = 0.25  # one request per active child per tick (mixed: read and leak alternately)
LEAK_MB = 2
VERDICTS = {"leak", "cow", "stable", "mixed", "unknown"}
CHILD_FIELDS = ("pid", "verdict", "rss_bytes", "private_bytes", "shared_bytes", "pss_bytes",
                "cow_bytes", "growth_bytes")
EXPECTED = {
    "read": {"cow"},
    "leak": {"leak"},
    "mixed": {"leak", "mixed"},
    "idle": {"stable", "cow", "unknown"},
}
# The burst test: work only in the first seconds of the window, then nothing. Expected verdicts as
# above, except that a burst reader that unshared under the COW threshold may be `stable`. The
# first leaker gets its burst spread over ~2 s, the second all at once at the start (a fraction of
# a second: within one --interval).
BURST_ROLES = ("read", "leak", "leak", "idle")
BURST_LEAKS, BURST_LEAK_KB = 60, 512  # 30 MiB kept
BURST_READS = 30
BURST_SPACING = 0.02  # seconds between rounds of a burst: 60 rounds take 1.5-3 s (--burst-spacing)
BURST_EXPECTED = dict(EXPECTED, read={"cow", "stable"})
# The gc.freeze test (gunicorn): the same /read load twice, on a preload without and with
# gc.freeze(). The preload adds GC-tracked containers that no route reads; every /read builds
# CHURN small lists, so the workers' cyclic GC runs full collections.
FREEZE_ROWS = 100_000
FREEZE_READ_ITEMS = 2000
FREEZE_CHURN = 20_000
FREEZE_TICK = 0.5
FREEZE_MIN_SAVING = 0.20  # the frozen run unshares at least this fraction less
STATUS_FIELDS = ("RssAnon", "VmSwap", "VmSize", "VmRSS")  # from /proc/PID/status
# The policy table (as scripts/accuracy makes for the fixture): who the older limits would recycle,
# given "grew by more than POLICY_LIMIT during the window": VSZ (VmSize, the 2007 cron script),
# RSS (VmRSS: puma_worker_killer, uWSGI reload-on-rss), unshared (Private: Apache2::SizeLimit).
# The right call is to recycle only a child that leaks.
POLICY_LIMIT_MIB = 6
LEAKS = {"read": False, "leak": True, "mixed": True, "idle": False}
SCENARIOS = {"steady": "steady traffic", "burst": "burst, then idle"}
DOC_BEGIN, DOC_END = "<!-- e2e-table:begin -->", "<!-- e2e-table:end -->"


class Options:
    kidreaper = None
    workload_only = False
    warm_up = True
    duration = 15
    burst_duration = 10
    burst_spacing = BURST_SPACING
    freeze_duration = 8
    interval = "500ms"
    timeout = 200
    write_doc = None
    watchdog_fired = False


LIVE_SERVERS = []
POLICY_ROWS = {}  # (scenario, server name) -> the policy rows of that window, for --write-doc
MODES = set()  # kidreaper's "mode" in those windows


# ---------------------------------------------------------------------------------------------
# Ground truth from /proc

def children_of(ppid):
    """Pids whose parent is ppid, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            found.append(int(entry))
    return sorted(found)


def memory_of(pid):
    """Bytes from smaps_rollup (Rss, Pss, Private_Dirty, Shared_Dirty, Anonymous...) and from
    status: RssAnon, VmSwap, and VmSize and VmRSS (what the older limits watch)."""
    sample = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                sample[parts[0].rstrip(":")] = int(parts[1]) * 1024
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in STATUS_FIELDS:
                sample[key] = int(rest.split()[0]) * 1024
    return sample


def snapshot(pids):
    result = {}
    for pid in pids:
        try:
            result[pid] = memory_of(pid)
        except OSError:
            result[pid] = None
    return result


def mib(n):
    return f"{n / MiB:+.1f}" if n is not None else "?"


def policy_table(rows):
    """Markdown lines of the policy table (the kind scripts/accuracy writes) and the right calls
    of kidreaper and of each older limit: recycle a child only when it leaks."""
    limit = POLICY_LIMIT_MIB * MiB
    lines = ["| server | scenario | role | what it did | rise of private (smaps) / anon (status) | "
             "rise of VmSize / VmRSS | kidreaper: cow / growth | verdict | VSZ | RSS | unshared |",
             "|---|---|---|---|---:|---:|---:|---|---|---|---|"]
    score = {"kidreaper": 0, "VSZ": 0, "RSS": 0, "unshared": 0}
    for row in rows:
        leaks = LEAKS[row["role"]]
        cells = []
        for name, grew in (("VSZ", row["vsz"]), ("RSS", row["rss"]), ("unshared", row["private"])):
            recycles = grew > limit
            score[name] += recycles == leaks
            text = "recycles" if recycles else "keeps"
            cells.append(text if recycles == leaks else f"**{text}**")
        verdict = row["verdict"]
        right = verdict in ("leak", "mixed") if leaks else verdict in ("stable", "cow", "unknown")
        score["kidreaper"] += right
        kidreaper = (f"{row['cow'] / MiB:.1f} / {row['growth'] / MiB:.1f}"
                     if row["cow"] is not None and row["growth"] is not None else "?")
        lines.append(f"| {row['server']} | {SCENARIOS[row['scenario']]} | {row['role']} | {row['what']} | "
                     f"{mib(row['private'])} / {mib(row['anon'])} | {mib(row['vsz'])} / {mib(row['rss'])} | "
                     f"{kidreaper} | {verdict if right else f'**{verdict}**'} | " + " | ".join(cells) + " |")
    lines += ["", f"Right calls out of {len(rows)}: " + ", ".join(f"{name} {n}" for name, n in score.items()) + "."]
    return lines


def doc_table():
    """The text --write-doc puts between the e2e markers: one line on how it was measured, then
    the steady and the burst windows of every server."""
    rows = [row for scenario in SCENARIOS for server in (PerlFcgiServer.name, GunicornServer.name)
            for row in POLICY_ROWS.get((scenario, server), [])]
    modes = ", ".join(sorted(MODES)) or "?"
    header = (f"Measured on Linux {os.uname().release} (mode: {modes}) by `tests/e2e/test_diagnose_servers.py "
              f"--write-doc`: {CHILDREN} children per server, a {Options.duration} s window of steady traffic "
              f"and a {Options.burst_duration} s window with a burst at its start, kidreaper `--interval "
              f"{Options.interval}`; each older policy recycles a child whose metric grew by more than "
              f"{POLICY_LIMIT_MIB} MiB during the window. Truth: the child's role (read, idle: not a leak; "
              f"leak, mixed: a leak), and its Private (smaps_rollup) and RssAnon+VmSwap at the window's start "
              f"and end, in MiB. A wrong call is in bold.")
    return "\n".join([header, ""] + policy_table(rows))


def write_doc(path):
    """Replaces the text between the e2e markers of `path` with doc_table(), keeping the markers."""
    with open(path) as doc:
        text = doc.read()
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    with open(path, "w") as doc:
        doc.write(text[:start] + "\n" + doc_table() + "\n" + text[end:])


# ---------------------------------------------------------------------------------------------
# Servers

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A pre-fork server started in its own session; stop() kills the whole process group."""

    name = "server"
    read_items = 10000  # items per /read: ~1% of the preloaded data, ~2 MB of pages

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix=f"kidreaper-e2e-{self.name}-")
        self.pidfile = os.path.join(self.workdir, "manager.pid")
        self.logfile = os.path.join(self.workdir, "server.log")
        self.proc = None
        self.port = None
        self.manager_pid = None
        self.dirty = False  # its children did work that a later test must not inherit

    def command(self, port, lifetime):
        raise NotImplementedError

    def environment(self, lifetime):
        return dict(os.environ)

    def request(self, path, timeout=10.0):
        """(status, parsed JSON body) of GET path."""
        raise NotImplementedError

    def log_tail(self, lines=30):
        try:
            with open(self.logfile, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def start(self, lifetime):
        last_error = None
        for _ in range(3):  # a picked port may be taken meanwhile
            self.port = free_port()
            if os.path.exists(self.pidfile):
                os.unlink(self.pidfile)
            with open(self.logfile, "w") as log:
                self.proc = subprocess.Popen(
                    self.command(self.port, lifetime), cwd=self.workdir, env=self.environment(lifetime),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            LIVE_SERVERS.append(self)
            try:
                self._wait_ready(timeout=60)
                self.dirty = False
                return
            except RuntimeError as error:
                last_error = error
                self.stop()
                if "in use" not in self.log_tail():
                    break
        raise last_error

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting:\n"
                                   + self.log_tail())
            try:
                with open(self.pidfile) as pidfile:
                    self.manager_pid = int(pidfile.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
                continue
            if len(children_of(self.manager_pid)) == CHILDREN:
                try:
                    status, _ = self.request("/ok", timeout=2)
                    if status == 200:
                        return
                except (OSError, http.client.HTTPException, fcgi_client.FastCgiError):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n" + self.log_tail())

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left of the group, children included
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class PerlFcgiServer(Server):
    name = "perl-fcgi"
    items = 1_000_000  # ~205 MB of scalars in the manager

    def command(self, port, lifetime):
        return ["perl", os.path.join(E2E_DIR, "fcgi_app.pl"), "--port", str(port),
                "--pidfile", self.pidfile, "--children", str(CHILDREN), "--items", str(self.items),
                "--max-lifetime", str(lifetime)]

    def request(self, path, timeout=10.0):
        status, _, body = fcgi_client.request(("127.0.0.1", self.port), path, timeout=timeout)
        return status, json.loads(body)


class GunicornServer(Server):
    name = "gunicorn"
    items = 700_000  # ~235 MB dict of str in the arbiter
    read_items = 7000

    def __init__(self, extra_env=None):
        super().__init__()
        self.extra_env = dict(extra_env or {})

    def command(self, port, lifetime):
        gunicorn = shutil.which("gunicorn")
        if gunicorn is None:
            raise RuntimeError("gunicorn not found on PATH (Debian package gunicorn; scripts/setup-deps --test)")
        return [gunicorn, "--preload", "--workers", str(CHILDREN), "--worker-class", "sync",
                "--bind", f"127.0.0.1:{port}", "--pid", self.pidfile, "--chdir", E2E_DIR,
                "--timeout", "120", "--graceful-timeout", "30", "--config", "/dev/null",
                "gunicorn_app:app"]

    def environment(self, lifetime):
        env = dict(os.environ)
        env.pop("GUNICORN_CMD_ARGS", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["E2E_ITEMS"] = str(self.items)
        env["E2E_MAX_LIFETIME"] = str(lifetime)
        env.pop("KR_GC_FREEZE", None)
        env.pop("E2E_GC_ROWS", None)
        env.update(self.extra_env)
        return env

    def request(self, path, timeout=10.0):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


# ---------------------------------------------------------------------------------------------
# Traffic

class Traffic(threading.Thread):
    """Aims work at single children until stopped; bounded in time and request count.

    ledger[pid] counts what each child reported it did ("read", "leak", "skip").
    paths: role -> path template ({pid} filled in); mixed alternates between read and leak.
    """

    def __init__(self, server, roles, max_seconds, max_requests=20000, tick=TICK_SECONDS, paths=None,
                 patience=12 * CHILDREN):
        super().__init__(name=f"traffic-{server.name}", daemon=True)
        self.server = server
        self.roles = roles
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.tick = tick
        self.patience = patience  # tries per aimed request (gunicorn's workers take turns unevenly)
        self.paths = {"read": f"/read?pid={{pid}}&items={server.read_items}",
                      "leak": f"/leak?pid={{pid}}&mb={LEAK_MB}", **(paths or {})}
        self.stop_event = threading.Event()
        self.ledger = collections.defaultdict(collections.Counter)
        self.bodies = collections.defaultdict(list)  # pid -> its 200 answers, in order
        self.first_done, self.last_done = {}, {}  # pid -> time.monotonic() of its first/last 200
        self.requests = 0
        self.errors = []
        self.misses = 0  # targeted requests that never reached their child
        self.started_at = self.finished_at = None  # time.monotonic()

    def run(self):
        self.started_at = time.monotonic()
        try:
            self.send()
        finally:
            self.finished_at = time.monotonic()

    def send(self):
        deadline = time.monotonic() + self.max_seconds
        tick = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            for pid, role in self.roles.items():
                if role == "read" or (role == "mixed" and tick % 2 == 0):
                    self.aim(pid, self.paths["read"].format(pid=pid))
                elif role == "leak" or role == "mixed":
                    self.aim(pid, self.paths["leak"].format(pid=pid))
            tick += 1
            if self.requests >= self.max_requests or len(self.errors) > 20:
                break
            self.stop_event.wait(max(0.0, self.tick - (time.monotonic() - started)))

    def aim(self, pid, path):
        for attempt in range(self.patience):
            if self.stop_event.is_set():
                return
            if attempt >= CHILDREN:
                # Give every child time to wait for the next connection again: otherwise the one
                # that just answered 421 is the quickest to accept it, again and again (gunicorn).
                time.sleep(0.002)
            self.requests += 1
            try:
                status, body = self.server.request(path)
            except (OSError, ValueError, http.client.HTTPException, fcgi_client.FastCgiError) as error:
                self.errors.append(f"{path}: {error!r}")
                return
            self.ledger[body.get("pid")][body.get("op") if status in (200, 421) else f"http{status}"] += 1
            if status == 200:
                self.bodies[pid].append(body)
                self.first_done.setdefault(pid, time.monotonic())
                self.last_done[pid] = time.monotonic()
                return
        self.misses += 1


class BurstTraffic(Traffic):
    """Sends each child its burst, then stops: the rest of the window is idle. bursts[pid] is a
    list of rounds, each a list of paths; round i of every child is sent, then `spacing` seconds
    pass before round i + 1."""

    def __init__(self, server, bursts, spacing, max_seconds):
        super().__init__(server, {}, max_seconds, patience=60 * CHILDREN)
        self.bursts = bursts
        self.spacing = spacing

    def send(self):
        deadline = time.monotonic() + self.max_seconds
        for rounds in itertools.zip_longest(*self.bursts.values(), fillvalue=[]):
            if self.stop_event.is_set() or time.monotonic() > deadline or len(self.errors) > 20:
                return
            for pid, paths in zip(self.bursts, rounds):
                for path in paths:
                    self.aim(pid, path)
            self.stop_event.wait(self.spacing)


def warm_up(server, children, rounds=10):
    """Runs every handler's code path on every child with nothing to do (items=0, mb=0), so the
    interpreter's own first-use unsharing (~1 MiB per fresh gunicorn worker) is over before the
    window: the window then sees the steady state of a warm server."""
    traffic = Traffic(server, {}, max_seconds=30)
    for _ in range(rounds):
        for pid in children:
            for path in ("/ok", "/read?items=0", "/leak?mb=0"):
                traffic.aim(pid, f"{path}{'&' if '?' in path else '?'}pid={pid}")
    return traffic


def expected_role(counts):
    """The role a child played, from what it reported doing."""
    reads, leaks = counts.get("read", 0), counts.get("leak", 0)
    if reads and leaks:
        return "mixed"
    if reads:
        return "read"
    if leaks:
        return "leak"
    return "idle"


# ---------------------------------------------------------------------------------------------
# kidreaper

_probe_result = None


def probe_diagnose():
    """None when the kidreaper binary has a `diagnose` command, else why not."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result or None
    binary = Options.kidreaper
    if not binary:
        _probe_result = "no --kidreaper PATH given"
    elif not os.access(binary, os.X_OK):
        _probe_result = f"kidreaper binary {binary} is missing or not executable"
    else:
        try:
            run = subprocess.run([binary, "diagnose", "--help"], capture_output=True, text=True, timeout=20)
            # CLI11 prints the top-level help for `unknown --help`, so look for diagnose's own options.
            if run.returncode != 0 or "--pidfile" not in run.stdout:
                _probe_result = (f"{binary} does not support `diagnose` yet: `diagnose --help` exited "
                                 f"{run.returncode}\n{run.stderr.strip() or run.stdout.strip()[:400]}")
            else:
                _probe_result = ""
        except (OSError, subprocess.TimeoutExpired) as error:
            _probe_result = f"cannot run {binary}: {error!r}"
    return _probe_result or None


def start_diagnose(target_args, duration):
    command = [Options.kidreaper, "diagnose", *target_args, "--duration", f"{duration}s",
               "--interval", Options.interval, "--format", "json"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return command, proc


def wait_attached(proc, timeout=15.0):
    """Returns once kidreaper holds BPF links (its programs are attached), plus a little for its
    first sample, so that traffic sent from now on falls inside its window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
            if any(os.readlink(f"/proc/{proc.pid}/fd/{fd}") == "anon_inode:bpf_link" for fd in fds):
                time.sleep(0.3)
                return
        except OSError:
            pass
        time.sleep(0.02)
    time.sleep(0.5)  # exited or attaches differently: the report will tell


def finish_diagnose(proc, duration):
    """(returncode, stdout, stderr), killing kidreaper if it overstays."""
    try:
        stdout, stderr = proc.communicate(timeout=duration + 45)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n[e2e] killed: still running {duration + 45}s after start"
    return proc.returncode, stdout, stderr


# ---------------------------------------------------------------------------------------------
# Tests

class Window:
    """One diagnose window: the roles, the traffic, /proc before and after, kidreaper's output."""

    def __init__(self, roles, traffic, before):
        self.roles = roles
        self.traffic = traffic
        self.before = before
        self.after = {}
        self.command = None
        self.returncode = self.stdout = self.stderr = None
        self.reports = {}
        self.mode = None  # kidreaper's "mode"
        self.table = ""
        self.started_at = None

    def unshared(self, pid):
        return self.after[pid]["Private_Dirty"] - self.before[pid]["Private_Dirty"]

    def grown(self, pid):
        return self.after[pid]["RssAnon"] - self.before[pid]["RssAnon"]

    def rise(self, pid, *keys):
        """The rise of the sum of `keys` (0 for a key the kernel does not report) over the window."""
        return sum(self.after[pid].get(key, 0) - self.before[pid].get(key, 0) for key in keys)


class ServerChecks:
    """Starts `server_class` (if any) for the class; helpers that run a window and check its report."""

    server_class = None
    server = None

    @classmethod
    def setUpClass(cls):
        if Options.watchdog_fired:
            raise TimeoutError(f"[e2e] watchdog fired earlier (--timeout {Options.timeout}s)")
        if not Options.workload_only:
            problem = probe_diagnose()
            if problem:
                raise AssertionError(f"kidreaper diagnose unusable: {problem}")
        if cls.server_class is None:
            return
        cls.server = cls.server_class()
        try:
            cls.server.start(lifetime=Options.timeout + 60)
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanup()

    # -- helpers --------------------------------------------------------------------------

    def live_children(self):
        children = children_of(self.server.manager_pid)
        self.assertEqual(len(children), CHILDREN,
                         f"{self.server.name}: expected {CHILDREN} children of {self.server.manager_pid}, "
                         f"found {children}\n" + self.server.log_tail())
        return children

    def parse_report(self, command, returncode, stdout, stderr, context=""):
        root_note = "" if os.geteuid() == 0 else " (not running as root; kidreaper needs root)"
        where = f"\ncommand: {' '.join(command)}\nexit: {returncode}{root_note}\nstderr:\n{stderr.strip()}\n{context}"
        if returncode in (2, 106, 109) and "diagnose" in stderr:
            self.fail(f"kidreaper does not support `diagnose` yet{where}")
        self.assertEqual(returncode, 0, f"kidreaper diagnose failed{where}")
        try:
            report = json.loads(stdout)
        except ValueError as error:
            self.fail(f"stdout is not one JSON object ({error}): {stdout[:1000]!r}{where}")
        self.assertIsInstance(report, dict, f"JSON is not an object{where}")
        self.assertIsInstance(report.get("manager"), dict, f"no manager object{where}")
        self.assertEqual(report["manager"].get("pid"), self.server.manager_pid, f"manager.pid{where}")
        self.assertIsInstance(report.get("children"), list, f"no children list{where}")
        by_pid = {}
        for child in report["children"]:
            missing = [field for field in CHILD_FIELDS if field not in child]
            self.assertFalse(missing, f"child {child.get('pid')} lacks {missing}{where}")
            for field in CHILD_FIELDS:
                if field != "verdict":
                    self.assertTrue(isinstance(child[field], int) and not isinstance(child[field], bool),
                                    f"child {child['pid']}: {field}={child[field]!r} is not an integer{where}")
            self.assertIn(child["verdict"], VERDICTS, f"child {child['pid']}: verdict{where}")
            by_pid[child["pid"]] = child
        return by_pid, where

    def check_sizes(self, child, before, after, where):
        """kidreaper's sizes are bytes and agree with /proc (same order of magnitude)."""
        pid = child["pid"]
        for field in ("rss_bytes", "private_bytes", "shared_bytes", "pss_bytes", "cow_bytes"):
            self.assertGreaterEqual(child[field], 0, f"child {pid}: {field}{where}")
        low = min(before["Rss"], after["Rss"]) * 0.75 - 16 * MiB
        high = max(before["Rss"], after["Rss"]) * 1.25 + 16 * MiB
        self.assertTrue(low <= child["rss_bytes"] <= high,
                        f"child {pid}: rss_bytes={child['rss_bytes']} but /proc says Rss "
                        f"{before['Rss']}..{after['Rss']} bytes{where}")
        slack = 16 * MiB
        for field in ("private_bytes", "shared_bytes", "pss_bytes"):
            self.assertLessEqual(child[field], child["rss_bytes"] + slack, f"child {pid}: {field} > rss{where}")
        self.assertLessEqual(child["private_bytes"], child["pss_bytes"] + slack,
                             f"child {pid}: private_bytes > pss_bytes{where}")

    def fresh_children(self):
        """The live children, restarting the server first if an earlier test gave them work."""
        if self.server.dirty:
            self.server.stop()
            self.server.start(lifetime=Options.timeout + 60)
        return self.live_children()

    def observe(self, roles, traffic, duration, warm=None):
        """Warms up, runs `traffic` during a `duration` s diagnose window (or just the traffic with
        --workload-only), and returns a Window with /proc before and after and kidreaper's report."""
        children = sorted(roles)
        self.server.dirty = True
        if Options.warm_up:
            warmed = warm_up(self.server, children)
            self.assertFalse(warmed.errors, f"warm-up: {warmed.errors[:5]}")
        if warm is not None:
            warm(children)
        window = Window(roles=roles, traffic=traffic, before=snapshot(children))
        proc = None
        try:
            if not Options.workload_only:
                window.command, proc = start_diagnose(["--pid", str(self.server.manager_pid)], duration)
                wait_attached(proc)
            window.started_at = time.monotonic()
            traffic.start()
            if proc is not None:
                window.returncode, window.stdout, window.stderr = finish_diagnose(proc, duration)
            else:
                time.sleep(duration)
        finally:
            traffic.stop_event.set()
            if traffic.is_alive():
                traffic.join(timeout=30)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        window.after = snapshot(children)
        if proc is not None:
            try:
                report = json.loads(window.stdout)
                window.reports = {c.get("pid"): c for c in report.get("children", []) if isinstance(c, dict)}
                window.mode = report.get("mode")
            except (ValueError, AttributeError):
                pass
        window.table = self.ground_truth_table(children, roles, traffic, window.before, window.after,
                                               window.reports)
        if traffic.finished_at is not None and window.started_at is not None:
            window.table += (f"\ntraffic from {traffic.started_at - window.started_at:+.1f} s to "
                             f"{traffic.finished_at - window.started_at:+.1f} s of the window "
                             f"(attached at 0; {duration} s); each child's work from its first to "
                             f"its last answer: " + ", ".join(
                                 f"{pid} {traffic.first_done[pid] - window.started_at:+.2f}.."
                                 f"{traffic.last_done[pid] - window.started_at:+.2f} s"
                                 for pid in children if pid in traffic.last_done))
        print(f"\n{window.table}", file=sys.stderr)
        self.assertFalse(traffic.errors, f"request errors: {traffic.errors[:5]}\n{window.table}")
        self.assertEqual(self.live_children(), children, f"children changed during the run\n{window.table}")
        for pid in children:
            self.assertIsNotNone(window.before[pid], window.table)
            self.assertIsNotNone(window.after[pid], window.table)
        return window

    def record_policy(self, scenario, window, by_pid, what):
        """Prints the policy table of this window (who kidreaper and the older limits would recycle)
        and keeps its rows for --write-doc. what[pid]: what the child did, in words."""
        rows = []
        for pid in sorted(window.roles):
            child = by_pid.get(pid, {})
            rows.append({
                "server": self.server.name, "scenario": scenario, "role": window.roles[pid], "what": what[pid],
                "private": window.rise(pid, "Private_Clean", "Private_Dirty"),
                "anon": window.rise(pid, "RssAnon", "VmSwap"),
                "vsz": window.rise(pid, "VmSize"), "rss": window.rise(pid, "VmRSS"),
                "cow": child.get("cow_bytes"), "growth": child.get("growth_bytes"),
                "verdict": child.get("verdict", "missing")})
        POLICY_ROWS[(scenario, self.server.name)] = rows
        if isinstance(window.mode, str):
            MODES.add(window.mode)
        print(f"\n{self.server.name}, {SCENARIOS[scenario]}: who would recycle each child (limit: grew by "
              f"more than {POLICY_LIMIT_MIB} MiB; MiB)\n" + "\n".join(policy_table(rows)), file=sys.stderr)

    def check_workload(self, window, pid, played, leaked=None):
        """The workload did what it should (otherwise kidreaper cannot be judged)."""
        table = window.table
        self.assertEqual(played, window.roles[pid], f"child {pid} was meant to play {window.roles[pid]}\n{table}")
        unshared, grown = window.unshared(pid), window.grown(pid)
        if played == "read":
            self.assertGreater(unshared, 16 * MiB, f"workload: child {pid} did not unshare\n{table}")
            self.assertLess(abs(grown), 8 * MiB, f"workload: child {pid} grew on /read\n{table}")
        elif played == "leak":
            minimum = 0.9 * leaked if leaked else 32 * MiB
            self.assertGreater(grown, minimum, f"workload: child {pid} did not grow\n{table}")
        elif played == "mixed":
            self.assertGreater(grown, 16 * MiB, f"workload: child {pid} did not grow\n{table}")
            self.assertGreater(unshared - grown, 8 * MiB, f"workload: child {pid} did not unshare\n{table}")
        else:
            self.assertLess(abs(grown), 8 * MiB, f"workload: idle child {pid} grew\n{table}")

    def ground_truth_table(self, children, roles, traffic, before, after, reports):
        lines = [f"{self.server.name}: manager {self.server.manager_pid}, {traffic.requests} requests, "
                 f"{traffic.misses} missed, {len(traffic.errors)} errors; deltas over the run in MiB",
                 f"{'pid':>8} {'role':>6} {'reads':>5} {'leaks':>5} {'skips':>5} {'Rss':>7} "
                 f"{'dPrivDirty':>10} {'dRssAnon':>8} {'dPss':>7} | kidreaper: verdict cow growth rss private pss"]
        for pid in children:
            counts = traffic.ledger[pid]
            b, a = before.get(pid), after.get(pid)

            def delta(key):
                return mib(a[key] - b[key]) if a and b else "?"

            report = reports.get(pid)
            kr = "-"
            if report:
                kr = " ".join(f"{report.get(k)}" if k == "verdict" else mib(report.get(k)).lstrip("+")
                              if isinstance(report.get(k), int) else "?"
                              for k in ("verdict", "cow_bytes", "growth_bytes", "rss_bytes", "private_bytes",
                                        "pss_bytes"))
            lines.append(f"{pid:>8} {roles[pid]:>6} {counts['read']:>5} {counts['leak']:>5} {counts['skip']:>5} "
                         f"{(a['Rss'] / MiB if a else 0):>7.1f} {delta('Private_Dirty'):>10} "
                         f"{delta('RssAnon'):>8} {delta('Pss'):>7} | {kr}")
        for pid in children:
            if reports.get(pid):
                kept = reports[pid].get("sustained_growth_bytes")
                lines.append(f"{pid:>8} kept {mib(kept).lstrip('+') if isinstance(kept, int) else '?'} MiB; "
                             f"reason: {reports[pid].get('reason')}")
        return "\n".join(lines)


class ServerTestMixin(ServerChecks):
    """The diagnose tests every server runs."""

    def steady_work(self, traffic, pid):
        """What a child did in the steady window, in words, from what it reported doing."""
        counts = traffic.ledger[pid]
        reads, leaks = counts["read"], counts["leak"]
        read = f"{reads} × `/read?items={self.server.read_items}`"
        leak = f"{leaks} × `/leak?mb={LEAK_MB}` ({leaks * LEAK_MB} MiB)"
        if reads and leaks:
            return f"{read} and {leak}, alternating, one every {TICK_SECONDS:g} s"
        if reads or leaks:
            return f"{read if reads else leak}, one every {TICK_SECONDS:g} s"
        return f"nothing ({counts['skip']} × 421)"

    def burst_work(self, traffic, rounds, pid):
        """What a child did in the burst window, in words."""
        counts = traffic.ledger[pid]
        if not rounds:
            return f"nothing ({counts['skip']} × 421, during the bursts)"
        took = traffic.last_done[pid] - traffic.first_done[pid] if pid in traffic.last_done else 0.0
        paths = [path for paths in rounds for path in paths]
        path = paths[0].replace(f"pid={pid}&", "")
        kept = f" ({len(paths) * BURST_LEAK_KB // 1024} MiB)" if "/leak" in path else ""
        spacing = (f"one every {Options.burst_spacing * 1000:g} ms" if len(rounds) > 1 and Options.burst_spacing
                   else "all at once")
        return f"{len(paths)} × `{path}`{kept}, {spacing}: {took:.1f} s, then idle"

    def test_diagnose_pidfile_idle_server(self):
        """--pidfile finds the manager and all its children; an idle server has no leak."""
        if Options.workload_only:
            self.skipTest("--workload-only")
        children = self.live_children()
        before = snapshot(children)
        command, proc = start_diagnose(["--pidfile", self.server.pidfile], 3)
        returncode, stdout, stderr = finish_diagnose(proc, 3)
        after = snapshot(children)
        by_pid, where = self.parse_report(command, returncode, stdout, stderr)
        self.assertEqual(sorted(by_pid), self.live_children(), f"children{where}")
        for pid in children:
            self.check_sizes(by_pid[pid], before[pid], after[pid], where)
            self.assertNotIn(by_pid[pid]["verdict"], ("leak", "mixed"),
                             f"child {pid} was idle but is called {by_pid[pid]['verdict']}{where}")

    def test_diagnose_verdicts_under_traffic(self):
        """Per child: /read only -> cow, /leak only -> leak, both -> leak|mixed, none -> no leak."""
        children = self.fresh_children()
        roles = dict(zip(children, ROLES))
        traffic = Traffic(self.server, roles, max_seconds=Options.duration + 30)
        window = self.observe(roles, traffic, Options.duration)
        for pid in children:
            self.check_workload(window, pid, expected_role(traffic.ledger[pid]))
        if Options.workload_only:
            return

        by_pid, where = self.parse_report(window.command, window.returncode, window.stdout, window.stderr,
                                          window.table)
        self.record_policy("steady", window, by_pid, {pid: self.steady_work(traffic, pid) for pid in children})
        for pid in children:
            self.assertIn(pid, by_pid, f"child {pid} missing from the report{where}")
            child = by_pid[pid]
            self.check_sizes(child, window.before[pid], window.after[pid], where)
            played = expected_role(traffic.ledger[pid])
            self.assertIn(child["verdict"], EXPECTED[played],
                          f"child {pid} played {played} but is called {child['verdict']}{where}")
            if played in ("read", "mixed"):
                self.assertGreater(child["cow_bytes"], 1 * MiB, f"child {pid}: cow_bytes{where}")
            if played in ("leak", "mixed"):
                self.assertGreater(child["growth_bytes"], 16 * MiB, f"child {pid}: growth_bytes{where}")
            if played == "read":
                self.assertLess(child["growth_bytes"], 8 * MiB, f"child {pid}: growth_bytes{where}")

    def test_diagnose_verdicts_after_a_burst(self):
        """Work only in the first seconds of the window, then idle: both burst leakers (60 x 512 KiB,
        spread over ~2 s or all at once) -> leak with their growth, the burst reader -> cow (stable
        if under the threshold), the child that only answered 421 -> no leak."""
        duration = Options.burst_duration
        children = self.fresh_children()
        roles = dict(zip(children, BURST_ROLES))
        bursts, spread = {}, True
        for pid, role in roles.items():
            if role == "leak":
                leak = f"/leak?pid={pid}&kb={BURST_LEAK_KB}"
                bursts[pid] = [[leak]] * BURST_LEAKS if spread else [[leak] * BURST_LEAKS]
                spread = False
            elif role == "read":
                bursts[pid] = [[f"/read?pid={pid}&items={self.server.read_items}"]] * BURST_READS
        traffic = BurstTraffic(self.server, bursts, Options.burst_spacing, max_seconds=duration)
        window = self.observe(roles, traffic, duration)
        leaked = BURST_LEAKS * BURST_LEAK_KB * 1024
        for pid in children:
            played = expected_role(traffic.ledger[pid])
            self.assertEqual(traffic.ledger[pid][played] if played != "idle" else 0,
                             sum(map(len, bursts.get(pid, []))),
                             f"child {pid} did not get its whole {played} burst\n{window.table}")
            self.check_workload(window, pid, played, leaked=leaked)
        burst_seconds = traffic.finished_at - window.started_at
        self.assertLess(burst_seconds, 0.6 * duration,
                        f"the burst took {burst_seconds:.1f} s of the {duration} s window\n{window.table}")
        if Options.workload_only:
            return

        by_pid, where = self.parse_report(window.command, window.returncode, window.stdout, window.stderr,
                                          window.table)
        self.record_policy("burst", window, by_pid,
                           {pid: self.burst_work(traffic, bursts.get(pid, []), pid) for pid in children})
        for pid in children:
            self.assertIn(pid, by_pid, f"child {pid} missing from the report{where}")
            child = by_pid[pid]
            self.check_sizes(child, window.before[pid], window.after[pid], where)
            played = expected_role(traffic.ledger[pid])
            self.assertIn(child["verdict"], BURST_EXPECTED[played],
                          f"child {pid} had a {played} burst but is called {child['verdict']}: "
                          f"{child.get('reason')!r}{where}")
            if played == "leak":
                truth = window.grown(pid)  # RssAnon over the run
                self.assertLess(abs(child["growth_bytes"] - truth), max(0.15 * truth, 4 * MiB),
                                f"child {pid}: growth_bytes={child['growth_bytes']} but RssAnon grew "
                                f"{truth}{where}")
                self.assertGreater(child["sustained_growth_bytes"], 2 * MiB,
                                   f"child {pid}: sustained_growth_bytes{where}")
            if played == "read":
                self.assertLess(child["growth_bytes"], 8 * MiB, f"child {pid}: growth_bytes{where}")
                if child["verdict"] == "cow":
                    self.assertGreater(child["cow_bytes"], 1 * MiB, f"child {pid}: cow_bytes{where}")


class PerlFcgiProcManager(ServerTestMixin, unittest.TestCase):
    server_class = PerlFcgiServer


class GunicornPreload(ServerTestMixin, unittest.TestCase):
    server_class = GunicornServer


class GunicornGcFreeze(ServerChecks, unittest.TestCase):
    """gc.freeze() before the fork: the same /read load unshares less (the advice for Python)."""

    def run_freeze_window(self, frozen):
        """One gunicorn --preload (KR_GC_FREEZE=1 or not) under the freeze test's /read load, every
        child a reader; returns the Window and kidreaper's report per pid."""
        env = {"E2E_GC_ROWS": str(FREEZE_ROWS)}
        if frozen:
            env["KR_GC_FREEZE"] = "1"
        server = GunicornServer(extra_env=env)
        server.name = "gunicorn-gc.freeze" if frozen else "gunicorn-no-freeze"
        type(self).server = self.server = server
        try:
            server.start(lifetime=Options.timeout + 60)
            children = self.live_children()
            roles = {pid: "read" for pid in children}
            read = f"/read?pid={{pid}}&items={FREEZE_READ_ITEMS}&churn={FREEZE_CHURN}"
            traffic = Traffic(server, roles, max_seconds=Options.freeze_duration + 30, tick=FREEZE_TICK,
                              paths={"read": read}, patience=60 * CHILDREN)
            # As patient as the window's traffic: gunicorn's workers take turns unevenly, and a
            # child that never got its warm-up request leaves nothing to compare with.
            warm = Traffic(server, {}, max_seconds=30, patience=60 * CHILDREN)

            def warm_churn(pids):
                # One request each: the churn's first allocations (pymalloc arenas) happen before
                # the window, and too few survivors yet for a full collection.
                for pid in pids:
                    warm.aim(pid, f"/read?pid={pid}&items=0&churn={FREEZE_CHURN}")
                self.assertFalse(warm.errors, f"warm-up: {warm.errors[:5]}")
                self.assertEqual(warm.misses, 0, "warm-up: a child never answered its request")

            window = self.observe(roles, traffic, Options.freeze_duration, warm=warm_churn)
            window.warm = warm
            by_pid = {}
            if not Options.workload_only:
                by_pid, window.where = self.parse_report(window.command, window.returncode, window.stdout,
                                                         window.stderr, window.table)
            return window, by_pid
        finally:
            server.cleanup()
            type(self).server = self.server = None

    def test_gc_freeze_unshares_less(self):
        """Without gc.freeze(), the workers' full collections write the GC header of every
        preloaded container; with it they skip them. Same load, at least 20% less unshared."""
        runs = {frozen: self.run_freeze_window(frozen) for frozen in (False, True)}
        totals = {}
        lines = [f"gc.freeze test: {FREEZE_ROWS} preloaded lists, /read?items={FREEZE_READ_ITEMS}"
                 f"&churn={FREEZE_CHURN} every {FREEZE_TICK} s per child, {Options.freeze_duration} s window"]
        for frozen, (window, by_pid) in runs.items():
            gen2 = []
            for pid in window.roles:
                warmed = window.warm.bodies[pid][-1]["collections"]
                bodies = window.traffic.bodies[pid]
                self.assertTrue(bodies, f"child {pid} got no /read\n{window.table}")
                self.assertEqual(bodies[-1]["frozen"] > FREEZE_ROWS, frozen,
                                 f"child {pid}: gc.get_freeze_count() = {bodies[-1]['frozen']}\n{window.table}")
                gen2.append(bodies[-1]["collections"][2] - warmed[2])
            # The workload: the same number of requests, and full collections in the window.
            self.assertTrue(all(n > 0 for n in gen2),
                            f"no full collection in the window: {gen2}\n{window.table}")
            # /proc's measure of COW: Private_Dirty growth less fresh memory (RssAnon growth).
            dirty = sum(window.unshared(pid) for pid in window.roles)
            grown = sum(window.grown(pid) for pid in window.roles)
            unshared = dirty - grown
            reads = sum(window.traffic.ledger[pid]["read"] for pid in window.roles)
            cow = sum(c["cow_bytes"] for c in by_pid.values()) if by_pid else None
            totals[frozen] = (unshared, cow, reads)
            lines.append(f"  {'gc.freeze()' if frozen else 'no freeze  '}: {reads} reads, full collections "
                         f"per child {gen2}, dPrivate_Dirty {dirty / MiB:.1f} MiB - dRssAnon "
                         f"{grown / MiB:.1f} MiB = {unshared / MiB:.1f} MiB unshared, kidreaper cow_bytes "
                         f"{cow / MiB if cow is not None else float('nan'):.1f} MiB; verdicts "
                         f"{[by_pid[pid]['verdict'] for pid in sorted(by_pid)]}")
            for pid, child in sorted(by_pid.items()):
                self.assertIn(child["verdict"], EXPECTED["read"],
                              f"child {pid} read but is called {child['verdict']}: {child.get('reason')!r}"
                              f"{window.where}")
                self.check_sizes(child, window.before[pid], window.after[pid], window.where)
            for pid, child in sorted(by_pid.items()):
                if child.get("cow_sites"):  # the advice shown is the one this test proves
                    self.assertEqual(child.get("runtime"), "python", f"child {pid}: runtime{window.where}")
                    self.assertIn("gc.freeze()", child.get("advice", ""), f"child {pid}: advice{window.where}")
            sites = collections.Counter()
            for child in by_pid.values():
                for site in child.get("cow_sites", []):
                    sites[site["name"]] += site["bytes"]
            if sites:
                lines.append("    COW written by: " + ", ".join(
                    f"{name} {n / MiB:.1f} MiB" for name, n in sites.most_common(5)))
        summary = "\n".join(lines)
        print(f"\n{summary}", file=sys.stderr)
        (unshared_off, cow_off, reads_off), (unshared_on, cow_on, reads_on) = totals[False], totals[True]
        self.assertLess(abs(reads_on - reads_off), 0.1 * reads_off + 2, f"not the same load\n{summary}")
        self.assertLess(unshared_on, (1 - FREEZE_MIN_SAVING) * unshared_off,
                        f"/proc: gc.freeze() did not unshare {FREEZE_MIN_SAVING:.0%} less\n{summary}")
        if cow_off is not None:
            self.assertLess(cow_on, (1 - FREEZE_MIN_SAVING) * cow_off,
                            f"kidreaper: gc.freeze() did not unshare {FREEZE_MIN_SAVING:.0%} less\n{summary}")


# ---------------------------------------------------------------------------------------------

def stop_all_servers():
    for server in list(LIVE_SERVERS):
        server.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--kidreaper", help="path to the kidreaper binary")
    parser.add_argument("--workload-only", action="store_true",
                        help="run the servers and traffic and check /proc ground truth only (no kidreaper)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="start the window on fresh children (their first-use unsharing included)")
    parser.add_argument("--duration", type=int, default=Options.duration, help="diagnose window, seconds")
    parser.add_argument("--burst-duration", type=int, default=Options.burst_duration,
                        help="diagnose window of the burst test, seconds")
    parser.add_argument("--burst-spacing", type=float, default=Options.burst_spacing,
                        help="seconds between the rounds of a burst (0: as fast as the server answers)")
    parser.add_argument("--freeze-duration", type=int, default=Options.freeze_duration,
                        help="diagnose window of each gc.freeze run, seconds")
    parser.add_argument("--interval", default=Options.interval, help="kidreaper's --interval (500ms)")
    parser.add_argument("--timeout", type=int, default=Options.timeout, help="watchdog for the whole run, seconds")
    parser.add_argument("--write-doc", metavar="PATH",
                        help="replace the text between the e2e-table markers in PATH with the policy tables "
                             "of the steady and burst windows (e.g. docs/accuracy.md)")
    args, rest = parser.parse_known_args()
    if not args.kidreaper and not args.workload_only:
        parser.print_usage(sys.stderr)
        print("error: --kidreaper PATH is required (or --workload-only)", file=sys.stderr)
        return 2
    Options.kidreaper = os.path.abspath(args.kidreaper) if args.kidreaper else None
    Options.workload_only = args.workload_only
    Options.duration = args.duration
    Options.burst_duration = args.burst_duration
    Options.burst_spacing = args.burst_spacing
    Options.freeze_duration = args.freeze_duration
    Options.interval = args.interval
    Options.warm_up = not args.no_warm_up
    Options.timeout = args.timeout
    if args.write_doc:
        if args.workload_only:
            print("error: --write-doc needs kidreaper's verdicts (not --workload-only)", file=sys.stderr)
            return 2
        try:
            with open(args.write_doc) as doc:
                text = doc.read()
        except OSError as error:
            print(f"error: --write-doc: {error}", file=sys.stderr)
            return 2
        if DOC_BEGIN not in text or DOC_END not in text or text.index(DOC_BEGIN) > text.index(DOC_END):
            print(f"error: --write-doc: {args.write_doc} lacks {DOC_BEGIN} ... {DOC_END}", file=sys.stderr)
            return 2
        Options.write_doc = args.write_doc

    status = run_tests_with_watchdog(Options, stop_all_servers, rest, "servers stopped")
    if Options.write_doc:
        wanted = [(scenario, server) for scenario in SCENARIOS
                  for server in (PerlFcgiServer.name, GunicornServer.name)]
        missing = [f"{server} {scenario}" for scenario, server in wanted if (scenario, server) not in POLICY_ROWS]
        if missing:
            print(f"[e2e] {Options.write_doc} not written: no table for {', '.join(missing)}", file=sys.stderr)
            return status or 1
        write_doc(Options.write_doc)
        print(f"[e2e] wrote the policy table into {Options.write_doc}", file=sys.stderr)
    return status


def run_tests_with_watchdog(options, cleanup, unittest_args, stopped_what):
    """Runs unittest with `unittest_args`; SIGTERM and a watchdog of `options.timeout` seconds
    end the run, and `cleanup` runs in every case. Returns the exit status."""
    atexit.register(cleanup)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"[e2e] stopped by signal {signum}")  # unittest lets this through

    def on_watchdog(_signum, _frame):
        options.watchdog_fired = True
        raise TimeoutError(f"[e2e] watchdog: the run took more than {options.timeout}s")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_watchdog)
    signal.alarm(options.timeout)
    try:
        program = unittest.main(argv=[sys.argv[0], *unittest_args], exit=False, verbosity=2)
    except KeyboardInterrupt as interrupt:
        print(f"\n{interrupt or '[e2e] interrupted'}; {stopped_what}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        cleanup()
    return 0 if program.result.wasSuccessful() else 1

if __name__ == "__main__":
    sys.exit(main())

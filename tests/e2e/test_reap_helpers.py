#!/usr/bin/env python3
"""End-to-end: helper children of real pre-fork managers are never signalled nor counted.

A pre-fork manager has children that are not workers: Apache's piped loggers and mod_cgid's
daemon, uWSGI's attached daemons, mules and spoolers. kidreaper must leave them alone: a child is
a worker only when it matches the worker rule (the presets' `exe,listener`: it runs the manager's
executable and holds one of the manager's listening sockets; `--workers` overrides it). Two real
servers from Debian's packages, each with 4 workers and helpers that a limit meant for the workers
would recycle:

  Apache prefork  /usr/sbin/apache2 -DFOREGROUND with its own minimal config (a free port on
                  127.0.0.1, a pidfile, its own runtime dir, Start/MinSpare/MaxSpareServers 4);
                  helpers: a piped ErrorLog (helper_hog.py: 40 MiB private, copies stdin to a
                  file) and mod_cgid's daemon (apache2 too, but without the listening socket)
  uWSGI           uwsgi --master --processes 4 --http-socket with gunicorn_app.py (small preload);
                  helpers: an --attach-daemon (helper_hog.py, 40 MiB), a --mule and a --spooler
                  (uwsgi too, but without the listening socket)

Every test starts a fresh server. The limit is half of the smallest worker's private memory, so
every worker (and every helper) is over it. Ground truth comes from /proc: a child is a worker
when it runs the manager's executable and holds a socket that the manager listens on
(/proc/net/tcp); a thread samples the manager's children every 50 ms.

  test_1_recycle_spares_helpers  `reap --server PRESET --limit L --stagger 1s` under request load
        (Apache: static files, some of 512 KiB; uWSGI: /ok, /leak, /slow) until 3 workers were
        recycled and replaced. Checks: one `helper` event per helper (with its comm), no other
        event ever names a helper, each helper is alive with the same start time and received no
        signal (helper_hog.py writes down every signal it gets), >= 2 recycles each of a worker
        (by /proc) with the preset's graceful signal, no request failed, 4 workers at the end.
  test_2_min_children_counts_workers_only  `--min-children 4`: with 4 workers (and 2 or 3
        helpers) nothing may be signalled: the first decision is a `held` event that counts 4
        children alive, never a recycle.
  test_3_diagnose_roles  `diagnose --format json` (default rule, then `--workers exe,listener`
        with --limit L): role "helper" for the helpers (with a role_reason), "worker" for the
        workers, no helper in would_recycle; the table marks the big helper apart.
  test_4_workers_any_dry_run  `reap --workers any --dry-run`: now every helper IS a candidate (a
        dry-run recycle event names each), no `helper` event, and still nobody is signalled.

    python3 tests/e2e/test_reap_helpers.py --kidreaper build/kidreaper [-v] [unittest args]
    python3 tests/e2e/test_reap_helpers.py --kidreaper build/kidreaper ApacheHelpers.test_4_workers_any_dry_run

Server start, the load, the kidreaper reap runner and the watchdog come from
test_reap_servers.py and test_diagnose_servers.py (imported, not copied). Needs root only because
kidreaper does, and the Debian packages apache2, uwsgi and uwsgi-plugin-python3 (scripts/setup-deps
--test). The system's own Apache (its default site on port 80, /etc/apache2, /run/apache2) is
neither used nor needed: each server runs under `timeout` in its own session with everything in a
temp dir, and its process group is killed at the end; helper_hog.py ends when its parent changes.
A watchdog (--timeout, 170 s by default) bounds the whole run.
"""
import argparse
import grp
import http.client
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, E2E_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import test_diagnose_servers as diag  # noqa: E402  (servers, /proc readers, diagnose runner, watchdog)
import test_reap_servers as reap  # noqa: E402  (kidreaper reap runner, load, /proc readers)

MiB = 1024 * 1024
KiB = 1024
WORKERS = 4
HELPER_MB = 40            # what helper_hog.py holds
RECYCLES_WANTED = 3       # test_1 runs until this many workers were recycled and replaced
RECYCLE_WAIT = 40         # ... or this many seconds
MIN_REQUESTS = 60         # ... and the load sent at least this many requests
APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
BIG_BYTES = 512 * KiB     # Apache's /big: a response that takes a while to send
HELPER_HOG = os.path.join(E2E_DIR, "helper_hog.py")


class Options:
    kidreaper = None
    timeout = 170
    watchdog_fired = False


# ---------------------------------------------------------------------------------------------
# Ground truth from /proc: who is a worker

def exe_of(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return None


def start_time_of(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, the process's identity."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def socket_inodes(pid):
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def listening_inodes():
    """Inodes of every listening TCP socket (state 0A in /proc/net/tcp and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A":
                        inodes.add(int(fields[9]))
        except OSError:
            continue
    return inodes


class Child:
    """One child of the manager as /proc shows it."""

    def __init__(self, pid, manager_exe, listeners):
        self.pid = pid
        self.start = start_time_of(pid)
        self.exe = exe_of(pid)
        self.comm = comm_of(pid)
        self.listener = bool(socket_inodes(pid) & listeners)
        self.worker = self.exe is not None and self.exe == manager_exe and self.listener

    def __repr__(self):
        role = "worker" if self.worker else "helper"
        return f"{self.pid}({role} {self.comm} {self.exe}{' listener' if self.listener else ''})"


def judge_children(manager):
    """{pid: Child} of the manager's living children."""
    manager_exe = exe_of(manager)
    listeners = socket_inodes(manager) & listening_inodes()
    children = {}
    for pid in diag.children_of(manager):
        if reap.alive(pid):
            child = Child(pid, manager_exe, listeners)
            if child.start is not None:
                children[pid] = child
    return children


class ChildWatch(threading.Thread):
    """Samples the manager's children every 50 ms; remembers every child that was ever a worker.
    Ever, not at its last sample: a uWSGI worker that got HUP closes its listening socket
    before it exits."""

    def __init__(self, manager):
        super().__init__(name=f"watch-{manager}", daemon=True)
        self.manager = manager
        self.workers = set()  # (pid, start time) of every child seen as a worker
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            children = judge_children(self.manager)
            with self.lock:
                self.workers.update((c.pid, c.start) for c in children.values() if c.worker)
            self.stop_event.wait(0.05)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)

    def workers_seen(self):
        with self.lock:
            return {pid for pid, _ in self.workers}


# ---------------------------------------------------------------------------------------------
# Servers

class HelperServer(diag.Server):
    """A diag.Server whose manager also has helpers: ready once WORKERS workers and `helpers`
    helpers are up, the big helper holds its memory and the server answers. helper_hog.py
    writes the signals it receives into `signals_file`."""

    helpers = None  # how many helper children the server has

    def __init__(self):
        super().__init__()
        self.signals_file = os.path.join(self.workdir, "helper-signals")
        self.known_helpers = {}  # pid -> start time, to make sure they are gone at the end

    def hog_command(self, lifetime, *extra):
        return [sys.executable, HELPER_HOG, "--mb", str(HELPER_MB), "--signals", self.signals_file,
                "--max-lifetime", str(lifetime), *extra]

    def request(self, path, timeout=10.0):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        state = "no pidfile"
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
            children = judge_children(self.manager_pid)
            helpers = [c for c in children.values() if not c.worker]
            self.known_helpers.update({c.pid: c.start for c in helpers})
            workers = len(children) - len(helpers)
            hogs = [c for c in helpers if reap.private_of(c.pid) >= HELPER_MB * MiB]
            state = f"children {sorted(children.values(), key=lambda c: c.pid)}"
            if workers == WORKERS and len(helpers) == self.helpers and hogs:
                try:
                    status, _ = self.request("/ok", timeout=2)
                    if status == 200:
                        return
                except (OSError, ValueError, http.client.HTTPException):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({state}):\n" + self.log_tail())

    def stop(self):
        super().stop()
        for pid, start in self.known_helpers.items():  # an attached daemon has its own session
            if start_time_of(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.known_helpers = {}

    def signals_received(self):
        try:
            with open(self.signals_file) as signals:
                return signals.read().split()
        except FileNotFoundError:
            return []


def has_user(name):
    try:
        pwd.getpwnam(name)
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


class ApacheServer(HelperServer):
    """Apache prefork with a piped ErrorLog (helper_hog.py --copy-to error.log) and mod_cgid."""

    name = "apache-prefork"
    helpers = 2  # the piped logger and mod_cgid's daemon

    def command(self, port, lifetime):
        docroot = os.path.join(self.workdir, "docroot")
        os.makedirs(docroot, exist_ok=True)
        # The children run as www-data (as under Debian's own config) when there is one: they must
        # reach the docroot in the (0700) temp dir.
        identity = ("User www-data\nGroup www-data" if has_user("www-data")
                    else "# no www-data: the children keep the server's user")
        os.chmod(self.workdir, 0o755)
        with open(os.path.join(docroot, "ok"), "w") as ok:
            json.dump({"op": "ok"}, ok)
        with open(os.path.join(docroot, "big"), "w") as big:
            json.dump({"op": "big", "pad": "x" * BIG_BYTES}, big)
        logger = " ".join(shlex.quote(word) for word in
                          self.hog_command(lifetime, "--copy-to", os.path.join(self.workdir, "error.log")))
        config = os.path.join(self.workdir, "httpd.conf")
        with open(config, "w") as conf:
            conf.write(f"""# kidreaper e2e: Apache prefork with helper children; nothing from /etc/apache2
ServerRoot "{self.workdir}"
DefaultRuntimeDir "{self.workdir}"
PidFile "{self.pidfile}"
LoadModule mpm_prefork_module {APACHE_MODULES}/mod_mpm_prefork.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule cgid_module {APACHE_MODULES}/mod_cgid.so
{identity}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
Mutex file:{self.workdir} default
ScriptSock "{self.workdir}/cgid.sock"
DocumentRoot "{docroot}"
ErrorLog "|{logger}"
LogLevel info
StartServers {WORKERS}
MinSpareServers {WORKERS}
MaxSpareServers {WORKERS}
ServerLimit {WORKERS}
MaxRequestWorkers {WORKERS}
MaxConnectionsPerChild 0
KeepAlive Off
""")
        return ["timeout", "--kill-after=10", str(lifetime), APACHE, "-f", config, "-DFOREGROUND"]

    def log_tail(self, lines=30):
        text = super().log_tail(lines)
        try:
            with open(os.path.join(self.workdir, "error.log"), errors="replace") as log:
                text += "[error.log]\n" + "".join(log.readlines()[-lines:])
        except OSError:
            pass
        return text


class UwsgiServer(HelperServer):
    """uWSGI with 4 workers of gunicorn_app.py, an attached daemon (helper_hog.py), a mule and a
    spooler."""

    name = "uwsgi"
    helpers = 3  # the attached daemon, the mule and the spooler

    def command(self, port, lifetime):
        uwsgi = shutil.which("uwsgi")
        if uwsgi is None:
            raise RuntimeError("uwsgi not found on PATH (Debian packages uwsgi, uwsgi-plugin-python3; "
                               "scripts/setup-deps --test)")
        spool = os.path.join(self.workdir, "spool")
        os.makedirs(spool, exist_ok=True)
        daemon = "exec " + " ".join(shlex.quote(word) for word in self.hog_command(lifetime))
        return ["timeout", "--kill-after=10", str(lifetime), uwsgi, "--plugin", "python3", "--master",
                "--processes", str(WORKERS), "--http-socket", f"127.0.0.1:{port}", "--chdir", E2E_DIR,
                "--module", "gunicorn_app:app", "--pidfile", self.pidfile, "--die-on-term",
                "--auto-procname", "--mule", "--spooler", spool, "--attach-daemon", daemon]

    def environment(self, lifetime):
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["E2E_ITEMS"] = "20000"  # a small preload: the helpers are the point here
        env["E2E_MAX_LIFETIME"] = str(lifetime)
        for name in ("KR_GC_FREEZE", "E2E_GC_ROWS", "UWSGI_INI", "PYTHONHOME", "PYTHONPATH"):
            env.pop(name, None)
        return env


class StaticLoad(reap.Load):
    """reap.Load's threads and records, with Apache's static routes: /ok and /big (512 KiB)."""

    def _run(self, seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + self.max_seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= self.max_requests:
                    return
            record = reap.send(self.server, "/big", "big") if rng.random() < 0.5 else \
                reap.send(self.server, "/ok", "ok")
            with self.lock:
                self.records.append(record)
            self.stop_event.wait(0.02)


_workers_probe = None


def probe_workers_option():
    """None when kidreaper's reap and diagnose take --workers, else why not."""
    global _workers_probe
    if _workers_probe is None:
        missing = []
        for command in ("reap", "diagnose"):
            try:
                run = subprocess.run([Options.kidreaper, command, "--help"], capture_output=True, text=True,
                                     timeout=20)
                if "--workers" not in run.stdout:
                    missing.append(command)
            except (OSError, subprocess.TimeoutExpired) as error:
                missing.append(f"{command} ({error!r})")
        _workers_probe = f"no --workers on {', '.join(missing)}" if missing else ""
    return _workers_probe or None


# ---------------------------------------------------------------------------------------------
# Tests

class HelperTestMixin:
    server_class = None
    server_flag = None       # --server
    graceful_signal = None   # what the preset sends

    def setUp(self):
        if Options.watchdog_fired:
            raise TimeoutError(f"[e2e] watchdog fired earlier (--timeout {Options.timeout}s)")
        problem = reap.probe_reap() or probe_workers_option()
        if problem:
            self.fail(f"kidreaper unusable for this test: {problem}")
        self.reaper = None
        self.load = None
        self.server = self.server_class()
        self.addCleanup(self.server.cleanup)
        self.server.start(lifetime=Options.timeout + 60)
        self.manager = self.server.manager_pid
        children = judge_children(self.manager)
        self.workers = sorted(pid for pid, child in children.items() if child.worker)
        self.helpers = {pid: child for pid, child in children.items() if not child.worker}
        self.manager_exe = exe_of(self.manager)
        hogs = [c for c in self.helpers.values() if c.exe != self.manager_exe]
        self.assertEqual(len(self.workers), WORKERS, f"workers: {children}\n{self.server.log_tail()}")
        self.assertEqual(len(self.helpers), self.server.helpers, f"helpers: {children}")
        self.assertEqual(len(hogs), 1, f"expected one helper running helper_hog.py: {children}")
        self.hog = hogs[0]
        self.watch = ChildWatch(self.manager)
        self.watch.start()
        self.addCleanup(self.watch.stop)
        self.addCleanup(self._stop_reaper_and_load)
        # Every worker is over the limit; so is every helper: were it taken for a worker, it
        # would be recycled too.
        self.limit = min(reap.private_of(pid) for pid in self.workers) // 2
        sizes = {pid: reap.private_of(pid) for pid in [*self.workers, *self.helpers]}
        self.assertGreater(self.limit, 16 * KiB, f"workload: workers' private memory {sizes}")
        for pid in self.helpers:
            self.assertGreater(sizes[pid], self.limit, f"workload: helper {self.helpers[pid]} is under the "
                                                       f"limit {self.limit}: {sizes}")
        self.assertGreaterEqual(sizes[self.hog.pid], HELPER_MB * MiB, f"workload: {sizes}")
        self.sizes = sizes

    def _stop_reaper_and_load(self):
        if self.load is not None:
            self.load.stop()
        if self.reaper is not None:
            self.reaper.stop()

    def start_reaper(self, *args):
        self.reaper = reap.Reaper(["--pid", str(self.manager), "--interval", "250ms", *args],
                                  self.server.workdir)
        start = self.reaper.wait_for(lambda e: e.get("event") == "start", timeout=20)
        self.assertIsNotNone(start, f"no start event from kidreaper{self.evidence()}")
        self.assertEqual(start.get("manager"), self.manager, f"start event{self.evidence()}")
        return start

    def stop_reaper(self):
        self.assertTrue(self.reaper.running(),
                        f"kidreaper ended on its own (exit {self.reaper.proc.returncode}){self.evidence()}")
        self.assertEqual(self.reaper.stop(), 0, f"kidreaper exit status after SIGTERM{self.evidence()}")

    def evidence(self):
        parts = [f"\nservers' children at the start: workers {self.workers}, "
                 f"helpers {list(self.helpers.values())}, private bytes {getattr(self, 'sizes', '?')}"]
        if self.reaper is not None:
            parts.append(f"kidreaper: {' '.join(self.reaper.command)}\n{self.reaper.transcript()}")
            stderr = self.reaper.stderr().strip()
            if stderr:
                parts.append(f"kidreaper stderr:\n{stderr[-3000:]}")
        parts.append(f"{self.server.name} log:\n{self.server.log_tail(20)}")
        return "\n".join(parts)

    def make_load(self, max_seconds):
        return reap.Load(self.server, max_seconds=max_seconds, seed=7)

    def wait_workers(self, timeout=20, gone=()):
        """The manager's children once it has WORKERS workers again and none of the pids in
        `gone` (children signalled to exit) is among them (bounded)."""
        deadline = time.monotonic() + timeout

        def settled(children):
            return (sum(c.worker for c in children.values()) == WORKERS
                    and not any(pid in children and reap.alive(pid) for pid in gone))

        children = judge_children(self.manager)
        while not settled(children) and time.monotonic() < deadline:
            time.sleep(0.1)
            children = judge_children(self.manager)
        return children

    def check_helpers_untouched(self, where):
        """Every helper is the same process as at the start and received no signal."""
        for pid, child in self.helpers.items():
            self.assertTrue(reap.alive(pid), f"helper {child} is gone{where}")
            self.assertEqual(start_time_of(pid), child.start, f"helper {child} was replaced{where}")
        self.assertEqual(self.server.signals_received(), [], f"the big helper {self.hog} received signals{where}")
        # Children that are no workers now, less workers on their way out (a uWSGI worker closes
        # its listening socket when it gets HUP), are the helpers of the start.
        former = self.watch.workers_seen()
        now = {pid: c for pid, c in judge_children(self.manager).items() if not c.worker and pid not in former}
        self.assertEqual(sorted(now), sorted(self.helpers), f"helpers changed: {now}{where}")

    def events_naming_helpers(self, allowed=("helper",)):
        return [e["_line"] for e in self.reaper.snapshot()
                if e.get("pid") in self.helpers and e.get("event") not in allowed]

    # -- 1 -------------------------------------------------------------------------------------

    def test_1_recycle_spares_helpers(self):
        """Workers are recycled under load; helpers are reported once and never touched."""
        load = self.load = self.make_load(max_seconds=RECYCLE_WAIT + 20)
        load.start()
        start = self.start_reaper("--server", self.server_flag, "--limit", str(self.limit), "--stagger", "1s",
                                  "--max-concurrent", "1", "--idle-timeout", "1s")
        self.reaper.wait_for(lambda e: len(self.reaper.snapshot("replaced")) >= RECYCLES_WANTED
                             and len(load.snapshot()) >= MIN_REQUESTS, timeout=RECYCLE_WAIT)
        self.assertTrue(load.stop(), "load threads did not finish")
        self.reaper.wait_for(lambda e: self._none_in_flight(), timeout=15)
        self.stop_reaper()
        # A recycle can go out in the same instant as the stop request: its child is still
        # finishing then, so wait for every signalled child to be gone and replaced.
        children_after = self.wait_workers(gone={e["pid"] for e in self.reaper.snapshot("recycle")})
        self.watch.stop()

        records = load.snapshot()
        failures = [r for r in records if r["error"]]
        recycles = self.reaper.snapshot("recycle")
        helper_events = self.reaper.snapshot("helper")
        workers_seen = self.watch.workers_seen()
        in_flight = sum(any(r["start"] < e["_wall"] < r["end"] for r in records) for e in recycles)
        summary = (f"\n[{self.server.name}] limit {self.limit} bytes; {len(recycles)} recycles "
                   f"(pids {[e['pid'] for e in recycles]}; {in_flight} with a request in flight); helper events "
                   f"{[(e.get('pid'), e.get('comm'), e.get('reason')) for e in helper_events]}; "
                   f"{len(records)} requests, {len(failures)} failed; children after {children_after}")
        print(summary, file=sys.stderr)
        where = f"{summary}{self.evidence()}"

        # Each helper reported once, by its pid and comm; nothing else ever names a helper.
        for pid, child in self.helpers.items():
            named = [e for e in helper_events if e.get("pid") == pid]
            self.assertEqual(len(named), 1, f"helper {child}: {len(named)} helper events{where}")
            self.assertEqual(named[0].get("comm"), child.comm, f"helper event's comm{where}")
            self.assertTrue(named[0].get("reason"), f"helper event without a reason{where}")
        self.assertEqual(sorted({e.get("pid") for e in helper_events}), sorted(self.helpers),
                         f"helper events for children that are not helpers{where}")
        self.assertEqual(self.events_naming_helpers(), [], f"events naming a helper{where}")
        self.check_helpers_untouched(where)
        # Workers were recycled, gracefully, and only workers.
        self.assertGreaterEqual(len(recycles), 2, f"fewer than 2 recycles{where}")
        for event in recycles:
            self.assertIn(event.get("pid"), workers_seen, f"recycled a child /proc never saw as a worker: "
                                                          f"{event['_line']}{where}")
            self.assertEqual(event.get("signal"), self.graceful_signal, f"signal: {event['_line']}{where}")
            self.assertGreater(event.get("value", 0), self.limit, f"under the limit: {event['_line']}{where}")
            self.assertNotIn("dry_run", event, f"dry_run on a real recycle{where}")
        for name in ("escalate", "grace-expired", "replace-timeout", "manager-gone"):
            self.assertFalse(self.reaper.snapshot(name), f"unexpected {name} event{where}")
        self.assertFalse(self.reaper.bad_lines, f"non-JSON lines on stdout{where}")
        self.assertEqual(start.get("workers"), "exe,listener", f"the preset's worker rule{where}")
        # The server kept serving.
        self.assertGreaterEqual(len(records), MIN_REQUESTS, f"too few requests{where}")
        self.assertEqual(failures, [], f"{len(failures)} of {len(records)} requests failed{where}")
        self.assertTrue(reap.alive(self.manager), f"manager {self.manager} is gone{where}")
        self.assertEqual(sum(c.worker for c in children_after.values()), WORKERS, f"workers after{where}")
        for event in recycles:
            self.assertFalse(event["pid"] in children_after and reap.alive(event["pid"]),
                             f"recycled worker {event['pid']} still alive{where}")

    def _none_in_flight(self):
        events = self.reaper.snapshot()
        signalled = {e["pid"] for e in events if e.get("event") == "recycle"}
        done = {e["pid"] for e in events if e.get("event") in ("replaced", "replace-timeout")}
        return signalled <= done

    # -- 2 -------------------------------------------------------------------------------------

    def test_2_min_children_counts_workers_only(self):
        """--min-children 4 with 4 workers: held, never signalled (helpers are not counted)."""
        self.start_reaper("--server", self.server_flag, "--limit", str(self.limit), "--stagger", "1s",
                          "--min-children", str(WORKERS), "--no-idle-wait")
        first = self.reaper.wait_for(lambda e: e.get("event") in ("held", "recycle"), timeout=15)
        self.stop_reaper()
        where = self.evidence()
        self.assertIsNotNone(first, f"neither held nor recycled{where}")
        self.assertEqual(first.get("event"), "held", f"signalled a worker below --min-children{where}")
        self.assertIn(first.get("pid"), self.workers, f"held a child that is not a worker{where}")
        self.assertIn(f"only {WORKERS} children alive", str(first.get("detail")),
                      f"the floor counted helpers{where}")
        self.assertFalse(self.reaper.snapshot("recycle"), f"recycled below --min-children{where}")
        self.assertEqual(self.events_naming_helpers(), [], f"events naming a helper{where}")
        self.check_helpers_untouched(where)

    # -- 3 -------------------------------------------------------------------------------------

    def diagnose(self, *args, duration=2):
        command, proc = diag.start_diagnose(["--pid", str(self.manager), *args], duration)
        returncode, stdout, stderr = diag.finish_diagnose(proc, duration)
        where = f"\ncommand: {' '.join(command)}\nexit {returncode}\nstderr:\n{stderr.strip()[-2000:]}"
        self.assertEqual(returncode, 0, f"kidreaper diagnose failed{where}")
        try:
            report = json.loads(stdout)
        except ValueError as error:
            self.fail(f"stdout is not JSON ({error}): {stdout[:1000]!r}{where}")
        return report, f"{where}\nstdout:\n{stdout[:6000]}"

    def roles_in(self, report, where):
        roles = {}
        for child in report.get("children", []):
            self.assertIn(child.get("role"), ("worker", "helper"), f"child {child.get('pid')}: role{where}")
            self.assertIsInstance(child.get("role_reason"), str, f"child {child.get('pid')}: role_reason{where}")
            roles[child["pid"]] = child
        for pid in [*self.workers, *self.helpers]:
            self.assertIn(pid, roles, f"child {pid} is missing from the report{where}")
        return roles

    def test_3_diagnose_roles(self):
        """diagnose: role "helper" for the helpers, "worker" for the workers; table marks them."""
        report, where = self.diagnose()
        roles = self.roles_in(report, where)
        self.assertEqual(roles[self.hog.pid]["role"], "helper", f"{self.hog} by the default rule{where}")
        self.assertTrue(roles[self.hog.pid]["role_reason"], f"{self.hog}: no role_reason{where}")
        for pid in self.workers:
            self.assertEqual(roles[pid]["role"], "worker", f"worker {pid} by the default rule{where}")

        report, where = self.diagnose("--workers", "exe,listener", "--limit", str(self.limit))
        roles = self.roles_in(report, where)
        for pid, child in self.helpers.items():
            self.assertEqual(roles[pid]["role"], "helper", f"{child} by exe,listener{where}")
            self.assertTrue(roles[pid]["role_reason"], f"{child}: no role_reason{where}")
        for pid in self.workers:
            self.assertEqual(roles[pid]["role"], "worker", f"worker {pid} by exe,listener{where}")
        would = report.get("summary", {}).get("would_recycle")
        self.assertIsInstance(would, list, f"no summary.would_recycle{where}")
        self.assertEqual(sorted(set(would) & set(self.helpers)), [], f"would recycle a helper{where}")
        self.assertEqual(sorted(set(would) & set(self.workers)), self.workers,
                         f"workers over --limit {self.limit} not in would_recycle{where}")

        command = [Options.kidreaper, "diagnose", "--pid", str(self.manager), "--duration", "1s",
                   "--interval", "500ms", "--workers", "exe,listener"]
        table = subprocess.run(command, capture_output=True, text=True, timeout=60)
        where = f"\ncommand: {' '.join(command)}\nexit {table.returncode}\n{table.stdout}\n{table.stderr[-2000:]}"
        self.assertEqual(table.returncode, 0, f"diagnose (table) failed{where}")
        reasons = {pid: [line for line in table.stdout.splitlines() if line.startswith(f"  {pid}: ")]
                   for pid in [*self.workers, *self.helpers]}
        for pid, child in self.helpers.items():
            self.assertTrue(reasons[pid] and "helper" in reasons[pid][0], f"table: {child} not marked{where}")
        for pid in self.workers:
            self.assertTrue(reasons[pid] and "helper" not in reasons[pid][0],
                            f"table: worker {pid} marked as a helper{where}")

    # -- 4 -------------------------------------------------------------------------------------

    def test_4_workers_any_dry_run(self):
        """--workers any: the helpers become candidates (dry-run recycle events), nobody signalled."""
        start = self.start_reaper("--server", self.server_flag, "--limit", str(self.limit), "--workers", "any",
                                  "--dry-run", "--stagger", "0s", "--no-idle-wait")
        named = self.reaper.wait_for(
            lambda e: set(self.helpers) <= {r.get("pid") for r in self.reaper.snapshot("recycle")}, timeout=20)
        self.stop_reaper()
        where = self.evidence()
        recycles = self.reaper.snapshot("recycle")
        self.assertEqual(start.get("workers"), "any", f"start event's worker rule{where}")
        self.assertIsNotNone(named, f"not every helper was a candidate with --workers any{where}")
        for event in recycles:
            self.assertIs(event.get("dry_run"), True, f"not a dry run: {event['_line']}{where}")
        hog = [e for e in recycles if e.get("pid") == self.hog.pid]
        self.assertTrue(hog and hog[0].get("value", 0) >= HELPER_MB * MiB, f"the big helper's event{where}")
        self.assertFalse(self.reaper.snapshot("helper"), f"helper events with --workers any{where}")
        self.check_helpers_untouched(where)
        self.assertEqual(sorted(p for p, c in judge_children(self.manager).items() if c.worker), self.workers,
                         f"workers changed in a dry run{where}")


class ApacheHelpers(HelperTestMixin, unittest.TestCase):
    server_class = ApacheServer
    server_flag = "httpd-prefork"
    graceful_signal = "USR1"

    def make_load(self, max_seconds):
        return StaticLoad(self.server, max_seconds=max_seconds, seed=7)


class UwsgiHelpers(HelperTestMixin, unittest.TestCase):
    server_class = UwsgiServer
    server_flag = "uwsgi"
    graceful_signal = "HUP"


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--kidreaper", help="path to the kidreaper binary")
    parser.add_argument("--timeout", type=int, default=Options.timeout, help="watchdog for the whole run, seconds")
    args, rest = parser.parse_known_args()
    if not args.kidreaper:
        parser.print_usage(sys.stderr)
        print("error: --kidreaper PATH is required", file=sys.stderr)
        return 2
    Options.kidreaper = os.path.abspath(args.kidreaper)
    Options.timeout = args.timeout
    for imported in (reap.Options, diag.Options):
        imported.kidreaper = Options.kidreaper
        imported.timeout = args.timeout
    diag.Options.interval = "500ms"
    return diag.run_tests_with_watchdog(Options, reap.stop_everything, rest, "servers and kidreaper stopped")


if __name__ == "__main__":
    sys.exit(main())

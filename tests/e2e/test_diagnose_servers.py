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

    python3 tests/e2e/test_diagnose_servers.py --kidreaper build/userspace/kidreaper [-v] [unittest args]
    python3 tests/e2e/test_diagnose_servers.py --workload-only    # no kidreaper, no root: servers only

Needs root only because kidreaper does. Everything listens on 127.0.0.1; every server is stopped
(its process group killed) at the end, and ends itself after a maximum lifetime anyway.
"""
import argparse
import atexit
import collections
import http.client
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


class Options:
    kidreaper = None
    workload_only = False
    warm_up = True
    duration = 15
    timeout = 170
    watchdog_fired = False


LIVE_SERVERS = []


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
    """Bytes from smaps_rollup (Rss, Pss, Private_Dirty, Shared_Dirty, Anonymous...) and RssAnon."""
    sample = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                sample[parts[0].rstrip(":")] = int(parts[1]) * 1024
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                sample["RssAnon"] = int(line.split()[1]) * 1024
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
    """

    def __init__(self, server, roles, max_seconds, max_requests=20000):
        super().__init__(name=f"traffic-{server.name}", daemon=True)
        self.server = server
        self.roles = roles
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.ledger = collections.defaultdict(collections.Counter)
        self.requests = 0
        self.errors = []
        self.misses = 0  # targeted requests that never reached their child

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        tick = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            for pid, role in self.roles.items():
                if role == "read" or (role == "mixed" and tick % 2 == 0):
                    self.aim(pid, f"/read?pid={pid}&items={self.server.read_items}")
                elif role == "leak" or role == "mixed":
                    self.aim(pid, f"/leak?pid={pid}&mb={LEAK_MB}")
            tick += 1
            if self.requests >= self.max_requests or len(self.errors) > 20:
                break
            self.stop_event.wait(max(0.0, TICK_SECONDS - (time.monotonic() - started)))

    def aim(self, pid, path):
        for _ in range(12 * CHILDREN):
            if self.stop_event.is_set():
                return
            self.requests += 1
            try:
                status, body = self.server.request(path)
            except (OSError, ValueError, http.client.HTTPException, fcgi_client.FastCgiError) as error:
                self.errors.append(f"{path}: {error!r}")
                return
            self.ledger[body.get("pid")][body.get("op") if status in (200, 421) else f"http{status}"] += 1
            if status == 200:
                return
        self.misses += 1


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
               "--interval", "500ms", "--format", "json"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return command, proc


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

class ServerTestMixin:
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

    # -- tests ----------------------------------------------------------------------------

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
        duration = Options.duration
        children = self.live_children()
        roles = dict(zip(children, ROLES))
        if Options.warm_up:
            warm = warm_up(self.server, children)
            self.assertFalse(warm.errors, f"warm-up: {warm.errors[:5]}")
        before = snapshot(children)
        traffic = Traffic(self.server, roles, max_seconds=duration + 30)
        command = proc = None
        try:
            if not Options.workload_only:
                command, proc = start_diagnose(["--pid", str(self.server.manager_pid)], duration)
                time.sleep(0.5)  # let it attach before the first request
            traffic.start()
            if proc is not None:
                returncode, stdout, stderr = finish_diagnose(proc, duration)
            else:
                time.sleep(duration)
        finally:
            traffic.stop_event.set()
            if traffic.is_alive():
                traffic.join(timeout=30)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        after = snapshot(children)
        reports = {}
        if proc is not None:
            try:
                reports = {c.get("pid"): c for c in json.loads(stdout).get("children", []) if isinstance(c, dict)}
            except (ValueError, AttributeError):
                pass
        table = self.ground_truth_table(children, roles, traffic, before, after, reports)
        print(f"\n{table}", file=sys.stderr)

        # 1. The workload did what it should (otherwise kidreaper cannot be judged).
        self.assertFalse(traffic.errors, f"request errors: {traffic.errors[:5]}\n{table}")
        self.assertEqual(self.live_children(), children, f"children changed during the run\n{table}")
        for pid in children:
            played = expected_role(traffic.ledger[pid])
            self.assertEqual(played, roles[pid], f"child {pid} was meant to play {roles[pid]}\n{table}")
            self.assertIsNotNone(before[pid], table)
            self.assertIsNotNone(after[pid], table)
            unshared = after[pid]["Private_Dirty"] - before[pid]["Private_Dirty"]
            grown = after[pid]["RssAnon"] - before[pid]["RssAnon"]
            if played == "read":
                self.assertGreater(unshared, 16 * MiB, f"workload: child {pid} did not unshare\n{table}")
                self.assertLess(abs(grown), 8 * MiB, f"workload: child {pid} grew on /read\n{table}")
            elif played == "leak":
                self.assertGreater(grown, 32 * MiB, f"workload: child {pid} did not grow\n{table}")
            elif played == "mixed":
                self.assertGreater(grown, 16 * MiB, f"workload: child {pid} did not grow\n{table}")
                self.assertGreater(unshared - grown, 8 * MiB, f"workload: child {pid} did not unshare\n{table}")
            else:
                self.assertLess(abs(grown), 8 * MiB, f"workload: idle child {pid} grew\n{table}")
        if Options.workload_only:
            return

        # 2. kidreaper's report.
        by_pid, where = self.parse_report(command, returncode, stdout, stderr, table)
        for pid in children:
            self.assertIn(pid, by_pid, f"child {pid} missing from the report{where}")
            child = by_pid[pid]
            self.check_sizes(child, before[pid], after[pid], where)
            played = expected_role(traffic.ledger[pid])
            self.assertIn(child["verdict"], EXPECTED[played],
                          f"child {pid} played {played} but is called {child['verdict']}{where}")
            if played in ("read", "mixed"):
                self.assertGreater(child["cow_bytes"], 1 * MiB, f"child {pid}: cow_bytes{where}")
            if played in ("leak", "mixed"):
                self.assertGreater(child["growth_bytes"], 16 * MiB, f"child {pid}: growth_bytes{where}")
            if played == "read":
                self.assertLess(child["growth_bytes"], 8 * MiB, f"child {pid}: growth_bytes{where}")

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
        return "\n".join(lines)


class PerlFcgiProcManager(ServerTestMixin, unittest.TestCase):
    server_class = PerlFcgiServer


class GunicornPreload(ServerTestMixin, unittest.TestCase):
    server_class = GunicornServer


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
    parser.add_argument("--timeout", type=int, default=Options.timeout, help="watchdog for the whole run, seconds")
    args, rest = parser.parse_known_args()
    if not args.kidreaper and not args.workload_only:
        parser.print_usage(sys.stderr)
        print("error: --kidreaper PATH is required (or --workload-only)", file=sys.stderr)
        return 2
    Options.kidreaper = os.path.abspath(args.kidreaper) if args.kidreaper else None
    Options.workload_only = args.workload_only
    Options.duration = args.duration
    Options.warm_up = not args.no_warm_up
    Options.timeout = args.timeout

    return run_tests_with_watchdog(Options, stop_all_servers, rest, "servers stopped")


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

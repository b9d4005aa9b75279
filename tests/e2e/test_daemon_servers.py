#!/usr/bin/env python3
"""End-to-end: one `kidreaper reap --config` daemon for two real pre-fork servers at once.

FCGI::ProcManager (fcgi_app.pl, named by its pidfile) and gunicorn --preload (gunicorn_app.py,
named by a cgroup v2 directory the test makes and moves the server into; by its pidfile when no
cgroup v2 hierarchy is mounted) run side by side with 4 children each, under client load
(/ok, /leak, /slow) on both. One daemon watches both from one config file:

    interval = "250ms"
    stagger = "3s"
    max-concurrent = 1
    [metrics]
    listen = "127.0.0.1:PORT"
    [[service]]  name = "fcgi",     pidfile = ..., server = "fcgi",     limit = fresh + 20 MiB
    [[service]]  name = "gunicorn", cgroup = ...,  server = "gunicorn", limit = fresh + 20 MiB

  test_1_both_servers_recycled_by_one_daemon
        Checks: each service recycles at least one child of its own server (never a pid of the
        other's, never a manager) with its preset's signal, not one request fails on either
        server, both managers live, each recycled child exited and was replaced; the metrics
        endpoint has both services, and kidreaper_recycles_total per service equals the recycle
        events the daemon logged.

    sudo python3 tests/e2e/test_daemon_servers.py --kidreaper build/kidreaper [-v]

Servers, load and the event reader come from test_diagnose_servers.py and test_reap_servers.py
(imported). Needs root (kidreaper loads BPF programs; cgroups). A watchdog (--timeout, 200 s)
bounds the run.
"""
import argparse
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest
import urllib.request

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, E2E_DIR)
sys.dont_write_bytecode = True
import test_diagnose_servers as diag  # noqa: E402
import test_reap_servers as reap  # noqa: E402

MiB = 1024 * 1024
LIMIT_MB = 20
LOAD_SECONDS = 40
CGROUP2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


class Options:
    kidreaper = None
    timeout = 200
    watchdog_fired = False


def cgroup2_root():
    """The mounted cgroup v2 hierarchy, or None."""
    with open("/proc/self/mounts") as mounts:
        points = {line.split()[1] for line in mounts if line.split()[2] == "cgroup2"}
    return next((path for path in CGROUP2_CANDIDATES if path in points), None)


class TestCgroup:
    """A cgroup v2 directory for the test; on cleanup its processes go back to the root."""

    def __init__(self, root):
        self.root = root
        self.path = os.path.join(root, f"kidreaper-e2e-{os.getpid()}")
        os.mkdir(self.path)

    def move(self, pid):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as procs:
            procs.write(f"{pid}\n")

    def cleanup(self):
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as procs:
                pids = procs.read().split()
            for pid in pids:
                try:
                    with open(os.path.join(self.root, "cgroup.procs"), "w") as out:
                        out.write(f"{pid}\n")
                except OSError:
                    pass  # exited meanwhile
            os.rmdir(self.path)
        except OSError:
            pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def counter_sum(text, name, service):
    """The sum of every series of counter `name` with service="service"."""
    total = 0.0
    pattern = re.compile(rf'^{name}\{{([^}}]*)\}} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match and f'service="{service}"' in match.group(1):
            total += float(match.group(2))
    return total


class OneDaemonTwoServers(unittest.TestCase):
    def setUp(self):
        if Options.watchdog_fired:
            raise TimeoutError("[e2e] watchdog fired earlier")
        reap.Options.kidreaper = Options.kidreaper
        problem = reap.probe_reap()
        if problem:
            self.fail(f"kidreaper reap unusable: {problem}")
        self.reaper = None
        self.loads = []
        self.servers = {"fcgi": diag.PerlFcgiServer(), "gunicorn": diag.GunicornServer()}
        for server in self.servers.values():
            self.addCleanup(server.cleanup)
            server.start(lifetime=Options.timeout + 60)
        self.addCleanup(self._stop)
        self.managers = {name: server.manager_pid for name, server in self.servers.items()}
        self.initial = {name: diag.children_of(pid) for name, pid in self.managers.items()}
        for name, children in self.initial.items():
            self.assertEqual(len(children), diag.CHILDREN, self.servers[name].log_tail())
        self.limits = {name: max(reap.private_of(pid) for pid in children) + LIMIT_MB * MiB
                       for name, children in self.initial.items()}
        self.workdir = tempfile.mkdtemp(prefix="kidreaper-e2e-daemon-")
        self.addCleanup(shutil.rmtree, self.workdir, True)

    def _stop(self):
        for load in self.loads:
            load.stop()
        if self.reaper is not None:
            self.reaper.stop()

    def evidence(self):
        text = "" if self.reaper is None else f"\n{self.reaper.transcript()}\n{self.reaper.stderr()[-2000:]}"
        for name, server in self.servers.items():
            text += f"\n{name} log:\n{server.log_tail()}"
        return text

    def test_1_both_servers_recycled_by_one_daemon(self):
        root = cgroup2_root()
        gunicorn_selector = ("pidfile", self.servers["gunicorn"].pidfile)
        if root is not None:
            cgroup = TestCgroup(root)
            self.addCleanup(cgroup.cleanup)
            cgroup.move(self.managers["gunicorn"])
            for pid in self.initial["gunicorn"]:
                cgroup.move(pid)
            gunicorn_selector = ("cgroup", cgroup.path)
        else:
            print("note: no cgroup v2 hierarchy: gunicorn named by its pidfile", file=sys.stderr)
        port = free_port()
        config = os.path.join(self.workdir, "kidreaper.toml")
        with open(config, "w") as out:
            out.write('interval = "250ms"\nstagger = "3s"\nmax-concurrent = 1\n'
                      f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
                      '[[service]]\nname = "fcgi"\nserver = "fcgi"\n'
                      f'pidfile = "{self.servers["fcgi"].pidfile}"\nlimit = {self.limits["fcgi"]}\n'
                      '[[service]]\nname = "gunicorn"\nserver = "gunicorn"\n'
                      f'{gunicorn_selector[0]} = "{gunicorn_selector[1]}"\n'
                      f'limit = {self.limits["gunicorn"]}\n')
        for seed, server in enumerate(self.servers.values(), start=1):
            load = reap.Load(server, max_seconds=LOAD_SECONDS + 30, seed=seed)
            self.loads.append(load)
            load.start()
        self.reaper = reap.Reaper(["--config", config], self.workdir)
        for name in self.servers:
            start = self.reaper.wait_for(
                lambda e, n=name: e.get("event") == "start" and e.get("service") == n, timeout=20)
            self.assertIsNotNone(start, f"no start for {name}{self.evidence()}")
            self.assertEqual(start.get("manager"), self.managers[name], self.evidence())
        for name in self.servers:
            recycle = self.reaper.wait_for(
                lambda e, n=name: e.get("event") == "recycle" and e.get("service") == n,
                timeout=LOAD_SECONDS)
            self.assertIsNotNone(recycle, f"no recycle for {name}{self.evidence()}")
        # The last recycles' replacements, then the load ends.
        for name in self.servers:
            self.reaper.wait_for(
                lambda e, n=name: e.get("event") == "replaced" and e.get("service") == n, timeout=20)
        for load in self.loads:
            self.assertTrue(load.stop(), "a load thread did not finish")
        metrics = scrape(port)
        recycles = self.reaper.snapshot("recycle")
        self.assertTrue(self.reaper.running(), self.evidence())
        self.assertEqual(self.reaper.stop(), 0, self.evidence())

        signals = {"fcgi": "HUP", "gunicorn": "TERM"}
        for name, server in self.servers.items():
            own = [e for e in recycles if e.get("service") == name]
            self.assertGreaterEqual(len(own), 1, self.evidence())
            other = next(n for n in self.servers if n != name)
            for event in own:
                pid = event["pid"]
                self.assertNotIn(pid, self.managers.values(), f"a manager was signalled{self.evidence()}")
                self.assertNotIn(pid, self.initial[other], f"{name} signalled {other}'s child{self.evidence()}")
                self.assertEqual(event.get("signal"), signals[name], self.evidence())
                self.assertEqual(event.get("limit"), self.limits[name], self.evidence())
                self.assertFalse(reap.alive(pid) and pid in diag.children_of(self.managers[name]),
                                 f"recycled child {pid} of {name} still runs{self.evidence()}")
            self.assertTrue(reap.alive(self.managers[name]), f"{name}'s manager died{self.evidence()}")
            self.assertEqual(len(diag.children_of(self.managers[name])), diag.CHILDREN,
                             f"{name} is not back to {diag.CHILDREN} children{self.evidence()}")
            self.assertEqual(counter_sum(metrics, "kidreaper_recycles_total", name), len(own),
                             f"kidreaper_recycles_total for {name}\n{metrics}")
            self.assertIn(f'kidreaper_manager_up{{service="{name}"}} 1', metrics)
        for load, name in zip(self.loads, self.servers):
            failures = [r for r in load.snapshot() if r["error"]]
            self.assertEqual(failures, [], f"failed requests on {name}: {failures[:5]}{self.evidence()}")
            self.assertGreater(len(load.snapshot()), 20, f"too little load on {name}")


def stop_everything():
    reap.stop_everything()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--kidreaper", help="path to the kidreaper binary")
    parser.add_argument("--timeout", type=int, default=Options.timeout)
    args, rest = parser.parse_known_args()
    if not args.kidreaper:
        print("error: --kidreaper PATH is required", file=sys.stderr)
        return 2
    Options.kidreaper = os.path.abspath(args.kidreaper)
    Options.timeout = args.timeout
    diag.Options.timeout = args.timeout
    return diag.run_tests_with_watchdog(Options, stop_everything, rest, "servers and kidreaper stopped")


if __name__ == "__main__":
    sys.exit(main())

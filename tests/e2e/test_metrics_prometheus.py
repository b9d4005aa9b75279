#!/usr/bin/env python3
"""End-to-end: a real Prometheus scrapes `kidreaper reap --config`'s metrics endpoint.

The fixture (tests/fixture, kr-fixture) is a manager with WORKERS idle children; its pid goes
into a pidfile in a temp dir. kidreaper runs as the daemon, from a config file of its own:

    interval = "1s"
    [metrics]
    listen = "127.0.0.1:PORT"
    [[service]]
    name = "fixture"
    pidfile = "TMP/fixture.pid"
    limit = "1GiB"
    dry-run = true

Debian's `prometheus` (2.x) runs with its own config file and storage dir in the temp dir,
`--web.listen-address=127.0.0.1:PORT2`, and scrapes kidreaper every second.

  test_1_prometheus_sees_the_service  waits (polling with a deadline) until Prometheus' HTTP API
        answers `kidreaper_children{service="fixture"}` with WORKERS, then checks
        `kidreaper_manager_up` = 1 and `kidreaper_limit_bytes` = 1073741824 the same way, and
        that the scrape target is up.
  test_2_promtool_accepts_the_endpoint  `promtool check metrics` on what GET /metrics returns.

    sudo python3 tests/e2e/test_metrics_prometheus.py --kidreaper build/kidreaper \\
        --fixture build/tests/kr-fixture [-v] [unittest args]

Needs root (kidreaper loads BPF programs) and the Debian package prometheus (scripts/setup-deps
--test). Without them the tests are skipped, or fail with CI=true. Every process it starts runs
in its own session and is killed at the end; a watchdog (--timeout, 120 s) bounds the run.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

WORKERS = 3
SERVICE = "fixture"
LIMIT_BYTES = 1 << 30
START_DEADLINE = 30     # seconds for kidreaper's endpoint, Prometheus' readiness
SCRAPE_DEADLINE = 60    # seconds until Prometheus has the fixture's workers


class Options:
    kidreaper = None
    fixture = None
    prometheus = "/usr/bin/prometheus"
    promtool = "/usr/bin/promtool"
    timeout = 120


def ci():
    return os.environ.get("CI") == "true"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url, timeout=2.0):
    """(status, body) of GET url; (None, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return None, str(error)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Process:
    """A process in its own session, its output in files under `directory`; stop() kills
    its whole process group."""

    def __init__(self, name, command, directory, **kwargs):
        self.name = name
        self.command = command
        self.stdout_path = os.path.join(directory, f"{name}.out")
        self.stderr_path = os.path.join(directory, f"{name}.err")
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.popen = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True,
                                          **kwargs)

    def exited(self):
        return self.popen.poll() is not None

    def describe(self):
        status = self.popen.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (f"{self.name} ({' '.join(self.command)}) {state}\n"
                f"--- stderr:\n{read_text(self.stderr_path)[-3000:]}"
                f"--- stdout:\n{read_text(self.stdout_path)[-2000:]}")

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()


class Fixture:
    """kr-fixture with WORKERS idle children, driven over its stdin/stdout."""

    def __init__(self, path):
        command = [path, "--preload", "16M"] + ["--child", "idle"] * WORKERS
        self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, start_new_session=True)
        self.manager = None
        self.children = []
        while True:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"kr-fixture ended before it was ready: {' '.join(command)}")
            words = line.split()
            if words[0] == "manager":
                self.manager = int(words[1])
            elif words[0] == "child":
                self.children.append(int(words[1]))
            elif words[0] == "ready":
                return

    def stop(self):
        if self.popen.poll() is None:
            try:
                self.popen.stdin.write("quit\n")
                self.popen.stdin.flush()
                self.popen.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout):
            try:
                pipe.close()
            except BrokenPipeError:
                pass


class PrometheusScrape(unittest.TestCase):
    """One fixture, one kidreaper daemon and one Prometheus for every test."""

    @classmethod
    def setUpClass(cls):
        cls.processes = []
        cls.fixture = None
        cls.tmp = None
        missing = []
        if os.geteuid() != 0:
            missing.append("root (kidreaper loads BPF programs)")
        for tool in (Options.prometheus, Options.promtool):
            if not os.access(tool, os.X_OK):
                missing.append(f"{tool} (Debian package prometheus)")
        if missing:
            if ci():
                raise AssertionError(f"CI=true and missing: {', '.join(missing)}")
            raise unittest.SkipTest(f"missing: {', '.join(missing)}")
        try:
            cls.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kidreaper-prometheus-")
        cls.fixture = Fixture(Options.fixture)
        pidfile = os.path.join(cls.tmp, "fixture.pid")
        with open(pidfile, "w") as f:
            f.write(f"{cls.fixture.manager}\n")

        cls.metrics_port = free_port()
        config = os.path.join(cls.tmp, "kidreaper.toml")
        with open(config, "w") as f:
            f.write(f'interval = "1s"\n\n'
                    f'[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n\n'
                    f'[[service]]\nname = "{SERVICE}"\npidfile = "{pidfile}"\n'
                    f'limit = "1GiB"\ndry-run = true\n')
        cls.kidreaper = Process("kidreaper", [Options.kidreaper, "reap", "--config", config],
                                cls.tmp)
        cls.processes.append(cls.kidreaper)
        cls.metrics_url = f"http://127.0.0.1:{cls.metrics_port}/metrics"
        cls.wait_until(lambda: http_get(cls.metrics_url)[0] == 200, START_DEADLINE,
                       f"kidreaper serving {cls.metrics_url}", cls.kidreaper)

        cls.prometheus_port = free_port()
        prometheus_config = os.path.join(cls.tmp, "prometheus.yml")
        with open(prometheus_config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kidreaper\n    scrape_interval: 1s\n"
                    "    scrape_timeout: 1s\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{cls.metrics_port}']\n")
        storage = os.path.join(cls.tmp, "tsdb")
        cls.prometheus = Process("prometheus", [
            Options.prometheus, f"--config.file={prometheus_config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{cls.prometheus_port}"], cls.tmp)
        cls.processes.append(cls.prometheus)
        cls.api = f"http://127.0.0.1:{cls.prometheus_port}"
        cls.wait_until(lambda: http_get(f"{cls.api}/-/ready")[0] == 200, START_DEADLINE,
                       "Prometheus ready", cls.prometheus)

    @classmethod
    def wait_until(cls, condition, deadline_seconds, what, process):
        """Polls `condition` every 0.2 s; fails naming `what` (and `process`'s output when it
        exited or the deadline passed)."""
        deadline = time.monotonic() + deadline_seconds
        while not condition():
            if process.exited():
                raise AssertionError(f"waiting for {what}: {process.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {deadline_seconds}s: {process.describe()}")
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        for process in reversed(cls.processes):
            process.stop()
        cls.processes = []
        if cls.fixture:
            cls.fixture.stop()
            cls.fixture = None
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            cls.tmp = None

    def query(self, promql):
        """The values of an instant query's result, as floats."""
        url = f"{self.api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url)
        if status != 200:
            return None
        answer = json.loads(body)
        if answer.get("status") != "success":
            return None
        return [float(sample["value"][1]) for sample in answer["data"]["result"]]

    def wait_for_value(self, promql, wanted):
        last = []

        def has_value():
            last[:] = [self.query(promql)]
            return last[0] == [wanted]

        try:
            self.wait_until(has_value, SCRAPE_DEADLINE, f"{promql} == {wanted} in Prometheus",
                            self.kidreaper)
        except AssertionError as error:
            status, targets = http_get(f"{self.api}/api/v1/targets")
            self.fail(f"{error}\nlast answer: {last}\ntargets: {targets}\n"
                      f"{self.prometheus.describe()}")

    def test_1_prometheus_sees_the_service(self):
        self.wait_for_value(f'kidreaper_children{{service="{SERVICE}"}}', float(WORKERS))
        self.wait_for_value(f'kidreaper_manager_up{{service="{SERVICE}"}}', 1.0)
        self.wait_for_value(f'kidreaper_limit_bytes{{service="{SERVICE}"}}', float(LIMIT_BYTES))
        self.wait_for_value('up{job="kidreaper"}', 1.0)
        self.assertEqual(self.query('count(kidreaper_build_info)'), [1.0])

    def test_2_promtool_accepts_the_endpoint(self):
        status, body = http_get(self.metrics_url)
        self.assertEqual(status, 200, body)
        self.assertIn(f'kidreaper_children{{service="{SERVICE}"}}', body)
        check = subprocess.run([Options.promtool, "check", "metrics"], input=body, text=True,
                               capture_output=True, timeout=30)
        self.assertEqual(check.returncode, 0, f"{check.stdout}{check.stderr}\n{body}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--kidreaper", required=True, help="path to the kidreaper binary")
    parser.add_argument("--fixture", required=True, help="path to kr-fixture")
    parser.add_argument("--prometheus", default=Options.prometheus)
    parser.add_argument("--promtool", default=Options.promtool)
    parser.add_argument("--timeout", type=int, default=Options.timeout,
                        help="watchdog for the whole run, seconds")
    args, rest = parser.parse_known_args()
    Options.kidreaper = os.path.abspath(args.kidreaper)
    Options.fixture = os.path.abspath(args.fixture)
    Options.prometheus = args.prometheus
    Options.promtool = args.promtool
    Options.timeout = args.timeout

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"[e2e] stopped by signal {signum}")

    def on_watchdog(_signum, _frame):
        raise TimeoutError(f"[e2e] watchdog: the run took more than {Options.timeout}s")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_watchdog)
    signal.alarm(Options.timeout)
    try:
        program = unittest.main(argv=[sys.argv[0], *rest], exit=False, verbosity=2)
    except KeyboardInterrupt as interrupt:
        print(f"\n{interrupt}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        PrometheusScrape.tearDownClass()
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark 5: real servers under load (requests per second and p99 latency).

Usage: servers.py --kidreaper PATH --out FILE [--rounds 8] [--seconds 3] [--warmup 1]
                  [--connections 4] [--threads 2] [--bpftrace /usr/bin/bpftrace]

Starts two pre-fork servers on loopback, each with its own configuration in a temporary
directory (nothing system-wide is used or changed):
  php-fpm   nginx (1 worker) passing *.php by FastCGI to php-fpm (pm = static, 4 children)
  gunicorn  gunicorn --preload, 4 sync workers, a Flask app loaded in the parent
Each serves two handlers: `alloc` allocates 4 MiB, writes every page and frees it (about
1000 page faults per request) and `tiny` returns a few bytes. wrk drives one handler at a
time; the conditions alternate in an order that rotates every round:
  none       nothing attached
  kidreaper  `kidreaper reap --pid MANAGER --limit 100GiB --interval 1s --server NAME
             --log-format json` watching the server under load (a fresh one per run, started
             before it and stopped after it; the run starts once it logged `start`)
  other      the same kidreaper watching the other server: this one is untracked
  bpftrace   bpftrace doing the same job on the server under load (its manager's children
             tracked, faults counted per tgid and error-code class)
Every process it starts runs in its own process group, stopped on exit and on
SIGTERM/SIGINT/SIGHUP; should this process be killed outright, a guardian process kills the
groups left and removes the temporary directory (see GUARDIAN).
Writes the raw samples and per-cell figures as JSON to --out. Needs root. Stdlib only.
"""
import argparse
import ctypes
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
ALLOC_BYTES = 4 << 20
CHILDREN = 4
CONDITIONS = ["none", "kidreaper", "other", "bpftrace"]
SERVERS = ["php-fpm", "gunicorn"]
HANDLERS = ["alloc", "tiny"]
LABELS = {"php-fpm": "nginx + php-fpm", "gunicorn": "gunicorn --preload"}

# The handlers. PHP: str_repeat() fills a fresh 4 MiB string; Zend's allocator serves an
# allocation over 2 MiB with its own mmap() and unmaps it when the request frees it, so
# every request touches fresh pages. Python: an anonymous mmap written one byte per page
# (a bytearray would come from glibc's heap, whose dynamic mmap threshold keeps a freed
# 4 MiB block for the next request: no faults after the first).
PHP_ALLOC = """<?php
$s = str_repeat("x", 4 << 20);
echo strlen($s), "\\n";
"""
PHP_TINY = """<?php
echo "ok\\n";
"""
FLASK_APP = """import mmap

from flask import Flask

SIZE = 4 << 20
PAGE = mmap.PAGESIZE
app = Flask(__name__)


@app.route("/alloc")
def alloc():
    buf = mmap.mmap(-1, SIZE)
    for offset in range(0, SIZE, PAGE):
        buf[offset] = 1
    buf.close()
    return "%d\\n" % SIZE


@app.route("/tiny")
def tiny():
    return "ok\\n"
"""

# bpftrace doing kidreaper's job, as in benchmark 1 (bench/fault_storm.cpp): the manager's
# children (those alive at its start registered in BEGIN, later ones by the fork hook)
# in a map, their faults counted per tgid and error-code class, user and kernel apart.
BPFTRACE_SCRIPT = """BEGIN { @manager[MANAGER] = 1; TRACKED printf("ready\\n"); }
tracepoint:sched:sched_process_fork /@manager[pid]/ { @tracked[args->child_pid] = 1; }
tracepoint:sched:sched_process_exit /tid == pid && @tracked[pid]/ { delete(@tracked[pid]); }
tracepoint:exceptions:page_fault_user /@tracked[pid]/ { @user[pid, args->error_code & 3] = count(); }
tracepoint:exceptions:page_fault_kernel /@tracked[pid]/ { @kernel[pid, args->error_code & 3] = count(); }
END { clear(@manager); clear(@tracked); }
"""

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _in_child():
    # Runs in the forked child before exec: die with us even if we are SIGKILLed.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes


# Should the harness be killed outright (SIGKILL: no cleanup runs), PR_SET_PDEATHSIG only
# takes down the programs it started itself, not their children (php-fpm's pool, nginx's
# worker outlive their master). This guardian, in a session of its own, learns every process
# group the harness starts ("+PGID") and stops ("-PGID") on its stdin; at end of file without
# "exit" first, the harness is gone: it kills the groups left and removes the temporary
# directory.
GUARDIAN = """import os, shutil, signal, sys, time
directory, groups, clean = sys.argv[1], set(), False
signal.signal(signal.SIGINT, signal.SIG_IGN)
for line in sys.stdin:
    line = line.strip()
    if line == "exit":
        clean = True
        break
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
if not clean:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        time.sleep(2 if sig == signal.SIGTERM else 0)
    shutil.rmtree(directory, ignore_errors=True)
"""


class Processes:
    """Every program we start, each the leader of its own process group."""

    def __init__(self, directory):
        self.running = []
        self.guardian = subprocess.Popen([sys.executable, "-c", GUARDIAN, directory],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         start_new_session=True, text=True)

    def _tell(self, line):
        try:
            self.guardian.stdin.write(line + "\n")
            self.guardian.stdin.flush()
        except (OSError, ValueError):
            pass

    def spawn(self, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None, cwd=None):
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   env=env, cwd=cwd, start_new_session=True,
                                   preexec_fn=_in_child)
        self.running.append(process)
        self._tell(f"+{process.pid}")
        return process

    @staticmethod
    def _group_alive(pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, process, sig=signal.SIGTERM, timeout=10.0, group=True):
        """Signals the process (its whole group unless group=False), waits for it, then kills
        whatever is left of its group."""
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        deadline = time.monotonic() + 5
        while self._group_alive(process.pid) and time.monotonic() < deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        if process in self.running:
            self.running.remove(process)
            if not self._group_alive(process.pid):
                self._tell(f"-{process.pid}")

    def stop_all(self):
        for process in reversed(list(self.running)):
            try:
                self.stop(process, timeout=5.0)
            except Exception as error:  # keep going: every group must be stopped
                print(f"servers: stopping {process.args[0]}: {error}", file=sys.stderr)
        if not self.running:
            self._tell("exit")
        try:
            self.guardian.stdin.close()
        except OSError:
            pass
        self.guardian.wait()


class Lines:
    """Lines from a pipe, with a timeout."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def next(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                if self.buffer:
                    line, self.buffer = self.buffer, b""
                    return line.decode(errors="replace")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if chunk:
                self.buffer += chunk
            else:
                self.eof = True
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")


def wait_until(what, condition, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- /proc


def read(path):
    with open(path) as f:
        return f.read()


def proc_stat(pid):
    """ppid, minflt, utime + stime (ticks) and starttime from /proc/PID/stat, or None."""
    try:
        text = read(f"/proc/{pid}/stat")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): field N is fields[N - 3].
    return {"ppid": int(fields[1]), "minflt": int(fields[7]),
            "cpu_ticks": int(fields[11]) + int(fields[12]), "start": int(fields[19])}


def sched_ns(pid):
    try:
        return int(read(f"/proc/{pid}/schedstat").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def children_of(ppid):
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat and stat["ppid"] == ppid:
                found[int(name)] = stat
    return found


def vmstat(key):
    for line in read("/proc/vmstat").splitlines():
        name, value = line.split()
        if name == key:
            return int(value)
    return 0


def cpu_busy_ticks():
    fields = read("/proc/stat").splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    user, nice, system, idle, iowait, irq, softirq = values[:7]
    steal = values[7] if len(values) > 7 else 0
    return user + nice + system + irq + softirq, steal


def wait_for_idle(threshold=0.15, timeout=1.0):
    """Waits (bounded) until the machine used less than `threshold` CPU over 100 ms: a
    just-started observer (bpftrace compiles its script) must not spill into the run."""
    deadline = time.monotonic() + timeout
    while True:
        before, _ = cpu_busy_ticks()
        time.sleep(0.1)
        after, _ = cpu_busy_ticks()
        busy = (after - before) / TICKS / 0.1
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def machine_facts():
    uname = os.uname()
    cpu_model = "?"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    try:
        thp = read("/sys/kernel/mm/transparent_hugepage/enabled")
    except OSError:
        thp = "?"
    return {"kernel": uname.release, "machine": uname.machine, "cpu_model": cpu_model,
            "cpus": os.cpu_count(), "memory": memory, "loadavg": read("/proc/loadavg").strip(),
            "thp": thp}


def fault_programs():
    """BPF programs on the page-fault tracepoints by name (kidreaper's on_fault_*, bpftrace's
    page_fault_*), anyone's; None when bpftool is missing."""
    bpftool = shutil.which("bpftool") or ("/usr/sbin/bpftool" if os.path.exists("/usr/sbin/bpftool") else None)
    if not bpftool:
        return None
    try:
        out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, timeout=10,
                             check=True).stdout
        programs = json.loads(out or b"[]")
    except (subprocess.SubprocessError, ValueError):
        return None
    return sum(1 for p in programs
               if "fault" in p.get("name", "") and "filemap" not in p.get("name", ""))


def find_program(names):
    for name in names:
        for directory in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/usr/bin", "/sbin"]:
            path = os.path.join(directory, name)
            if directory and os.access(path, os.X_OK):
                return path
    raise BenchError(f"none of {', '.join(names)} found (scripts/setup-deps --bench installs them)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- servers


class Server:
    name = ""
    manager = 0  # the pre-fork manager kidreaper and bpftrace watch
    urls = {}

    def extra_pids(self):
        """Other processes serving the requests (nginx's worker), for their CPU."""
        return []


class PhpFpm(Server):
    name = "php-fpm"

    def __init__(self, procs, directory):
        self.dir = os.path.join(directory, "php")
        www = os.path.join(self.dir, "www")
        os.makedirs(os.path.join(self.dir, "nginx-tmp"))
        os.makedirs(www)
        with open(os.path.join(www, "alloc.php"), "w") as f:
            f.write(PHP_ALLOC)
        with open(os.path.join(www, "tiny.php"), "w") as f:
            f.write(PHP_TINY)
        socket_path = os.path.join(self.dir, "php-fpm.sock")
        pidfile = os.path.join(self.dir, "php-fpm.pid")
        fpm_conf = os.path.join(self.dir, "php-fpm.conf")
        fpm_log = os.path.join(self.dir, "php-fpm.log")
        with open(fpm_conf, "w") as f:
            f.write(f"""[global]
pid = {pidfile}
error_log = {fpm_log}
daemonize = no

[bench]
user = nobody
listen = {socket_path}
listen.mode = 0666
pm = static
pm.max_children = {CHILDREN}
""")
        php_fpm = find_program(["php-fpm8.2", "php-fpm"])
        # -n: no php.ini and no conf.d scan (nothing of the system's configuration); OPcache
        # on, as any production PHP runs.
        fpm = procs.spawn([php_fpm, "--nodaemonize", "-n", "-y", fpm_conf,
                           "-d", "zend_extension=opcache", "-d", "opcache.enable=1"],
                          stdout=open(fpm_log + ".out", "w"), stderr=subprocess.STDOUT)
        self.manager = fpm.pid
        self.version = subprocess.run([php_fpm, "-n", "-v"], capture_output=True,
                                      text=True).stdout.splitlines()[0]
        wait_until("php-fpm's children", lambda: fpm.poll() is not None or
                   len(children_of(self.manager)) >= CHILDREN, 60)
        if fpm.poll() is not None:
            raise BenchError(f"php-fpm exited (status {fpm.returncode}):\n{tail(fpm_log)}"
                             f"{tail(fpm_log + '.out')}")

        port = free_port()
        nginx_conf = os.path.join(self.dir, "nginx.conf")
        nginx_log = os.path.join(self.dir, "nginx-error.log")
        temp = os.path.join(self.dir, "nginx-tmp")
        with open(nginx_conf, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
master_process on;
pid {self.dir}/nginx.pid;
error_log {nginx_log};
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  fastcgi_temp_path {temp}/fastcgi;
  proxy_temp_path {temp}/proxy;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location ~ \\.php$ {{
      fastcgi_pass unix:{socket_path};
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param SCRIPT_NAME $fastcgi_script_name;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param QUERY_STRING $query_string;
    }}
  }}
}}
""")
        nginx = find_program(["nginx"])
        self.nginx = procs.spawn([nginx, "-e", nginx_log, "-p", self.dir, "-c", nginx_conf],
                                 stdout=open(nginx_log + ".out", "w"), stderr=subprocess.STDOUT)
        self.version += "; " + subprocess.run([nginx, "-v"], capture_output=True,
                                              text=True).stderr.strip()
        self.urls = {"alloc": f"http://127.0.0.1:{port}/alloc.php",
                     "tiny": f"http://127.0.0.1:{port}/tiny.php"}

        def ready():
            for process, log in ((fpm, fpm_log), (self.nginx, nginx_log)):
                if process.poll() is not None:
                    raise BenchError(f"{process.args[0]} exited (status {process.returncode}):\n"
                                     f"{tail(log)}")
            return http_ok(self.urls["tiny"]) and http_ok(self.urls["alloc"])
        wait_until("nginx + php-fpm to answer", ready, 60)

    def extra_pids(self):
        return list(children_of(self.nginx.pid))


class Gunicorn(Server):
    name = "gunicorn"

    def __init__(self, procs, directory):
        self.dir = os.path.join(directory, "gunicorn")
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "bench_app.py"), "w") as f:
            f.write(FLASK_APP)
        port = free_port()
        log = os.path.join(self.dir, "gunicorn.log")
        gunicorn = find_program(["gunicorn", "gunicorn3"])
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        process = procs.spawn([gunicorn, "--preload", "--workers", str(CHILDREN),
                               "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
                               "--pid", os.path.join(self.dir, "gunicorn.pid"),
                               "--worker-tmp-dir", self.dir, "--chdir", self.dir,
                               "--error-logfile", log, "bench_app:app"],
                              stdout=open(log + ".out", "w"), stderr=subprocess.STDOUT, env=env)
        self.manager = process.pid
        self.version = "gunicorn " + subprocess.run([gunicorn, "--version"], capture_output=True,
                                                    text=True).stdout.split()[-1]
        self.urls = {"alloc": f"http://127.0.0.1:{port}/alloc",
                     "tiny": f"http://127.0.0.1:{port}/tiny"}

        def ready():
            if process.poll() is not None:
                raise BenchError(f"gunicorn exited (status {process.returncode}):\n{tail(log)}"
                                 f"{tail(log + '.out')}")
            return (len(children_of(self.manager)) >= CHILDREN and http_ok(self.urls["tiny"])
                    and http_ok(self.urls["alloc"]))
        wait_until("gunicorn to answer", ready, 60)


# ---------------------------------------------------------------- observers


def cpu_of(pid):
    stat = proc_stat(pid)
    return {"ticks": stat["cpu_ticks"] if stat else None, "sched_ns": sched_ns(pid)}


class Kidreaper:
    kind = "kidreaper"

    def __init__(self, procs, binary, server, directory):
        self.procs = procs
        self.watching = server.name
        self.log = os.path.join(directory, "kidreaper.stderr")
        started = time.monotonic()
        self.process = procs.spawn([binary, "reap", "--pid", str(server.manager), "--limit",
                                    "100GiB", "--interval", "1s", "--server", server.name,
                                    "--log-format", "json"],
                                   stdout=subprocess.PIPE, stderr=open(self.log, "w"))
        self.pid = self.process.pid
        self.lines = Lines(self.process.stdout)
        self.events = []
        while True:
            line = self.lines.next(max(0.1, started + 60 - time.monotonic()))
            if line is None:
                self.procs.stop(self.process, group=False)
                raise BenchError(f"kidreaper did not log start:\n{tail(self.log)}")
            event = self._event(line)
            if event.get("event") == "start":
                break
        self.startup_s = time.monotonic() - started

    def _event(self, line):
        try:
            event = json.loads(line)
        except ValueError:
            event = {"event": "unparsed", "line": line}
        self.events.append(event)
        return event

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        while (line := self.lines.next(10)) is not None:
            self._event(line)
        self.procs.stop(self.process, group=False)
        # start, stop and nothing else: with a limit of 100 GiB nobody is recycled.
        return {"events": sorted({e.get("event", "?") for e in self.events}),
                "exit_status": self.process.returncode}


class Bpftrace:
    kind = "bpftrace"

    def __init__(self, procs, binary, server, directory):
        self.procs = procs
        self.watching = server.name
        tracked = "".join(f"@tracked[{pid}] = 1; " for pid in sorted(children_of(server.manager)))
        script = BPFTRACE_SCRIPT.replace("MANAGER", str(server.manager)).replace("TRACKED ", tracked)
        self.log = os.path.join(directory, "bpftrace.stderr")
        started = time.monotonic()
        self.process = procs.spawn([binary, "-B", "line", "-e", script], stdout=subprocess.PIPE,
                                   stderr=open(self.log, "w"))
        self.pid = self.process.pid
        self.lines = Lines(self.process.stdout)
        self.output = []
        while True:
            line = self.lines.next(max(0.1, started + 120 - time.monotonic()))
            if line is None:
                self.procs.stop(self.process, group=False)
                raise BenchError(f"bpftrace did not start:\n{tail(self.log)}")
            self.output.append(line)
            if line.strip() == "ready":
                break
        self.startup_s = time.monotonic() - started

    def stop(self):
        self.process.send_signal(signal.SIGINT)  # it prints its maps and exits
        while (line := self.lines.next(30)) is not None:
            self.output.append(line)
        self.procs.stop(self.process, group=False)
        counts = {"user": 0, "kernel": 0}
        for line in self.output:
            match = re.match(r"@(user|kernel)\[\d+, \d+\]: (\d+)", line)
            if match:
                counts[match.group(1)] += int(match.group(2))
        # From its start to its stop: a little more than the run of wrk.
        return {"faults_counted": counts, "exit_status": self.process.returncode}


# ---------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text):
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not done or not rps:
        raise BenchError("cannot read wrk's output:\n" + text)
    latency = {}
    for percent, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$",
                                           text, re.M):
        latency[f"p{percent}"] = float(value) * UNITS[unit]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests": int(done.group(1)),
            "duration_s": float(done.group(2)) * UNITS[done.group(3)] / 1e3,
            "rps": float(rps.group(1)), "latency_ms": latency,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_wrk(procs, wrk, url, seconds, connections, threads, directory):
    out_path = os.path.join(directory, "wrk.out")
    with open(out_path, "w") as out:
        process = procs.spawn([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                               "--timeout", "10s", "--latency", url], stdout=out,
                              stderr=subprocess.STDOUT)
    try:
        process.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish")
    finally:
        procs.stop(process)
    if process.returncode != 0:
        raise BenchError(f"wrk failed (status {process.returncode}):\n{tail(out_path)}")
    return parse_wrk(read(out_path))


# ---------------------------------------------------------------- one run


def snapshot(server, observer):
    children = children_of(server.manager)
    extra = {pid: proc_stat(pid) for pid in server.extra_pids()}
    busy, steal = cpu_busy_ticks()
    return {"time": time.monotonic(), "children": children,
            "extra": {pid: s for pid, s in extra.items() if s},
            "manager": proc_stat(server.manager), "pgfault": vmstat("pgfault"),
            "busy": busy, "steal": steal, "self": proc_stat(os.getpid()),
            "observer": cpu_of(observer.pid) if observer else None}


def delta(before, after, key):
    common = [pid for pid in after if pid in before and after[pid]["start"] == before[pid]["start"]]
    return sum(after[pid][key] - before[pid][key] for pid in common), len(common)


def measure(args, procs, servers, server, handler, condition, directory):
    other = servers[1 - servers.index(server)]
    sample = {"server": server.name, "handler": handler, "condition": condition}
    foreign = fault_programs()
    sample["fault_programs_before"] = foreign
    observer = None
    if condition == "kidreaper":
        observer = Kidreaper(procs, args.kidreaper, server, directory)
    elif condition == "other":
        observer = Kidreaper(procs, args.kidreaper, other, directory)
    elif condition == "bpftrace":
        observer = Bpftrace(procs, args.bpftrace, server, directory)
    try:
        if observer:
            sample["observer"] = {"kind": observer.kind, "watching": observer.watching,
                                  "pid": observer.pid, "startup_s": observer.startup_s}
        sample["busy_before"] = wait_for_idle()
        attached = fault_programs()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = snapshot(server, observer)
        sample.update(run_wrk(procs, args.wrk, server.urls[handler], args.seconds,
                              args.connections, args.threads, directory))
        after = snapshot(server, observer)
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sample["fault_programs_during"] = [attached, fault_programs()]
    finally:
        if observer:
            sample.setdefault("observer", {}).update(observer.stop())
            # The kernel frees an exited observer's programs a little later: wait for them
            # to go, so the next run does not take them for another observer's.
            if foreign is not None:
                gone = time.monotonic()
                try:
                    wait_until("the observer's BPF programs to go",
                               lambda: (fault_programs() or 0) <= foreign, 10, step=0.1)
                except BenchError:
                    pass
                sample["observer"]["programs_gone_s"] = time.monotonic() - gone
    wall = after["time"] - before["time"]
    minflt, alive = delta(before["children"], after["children"], "minflt")
    child_cpu, _ = delta(before["children"], after["children"], "cpu_ticks")
    extra_minflt, _ = delta(before["extra"], after["extra"], "minflt")
    extra_cpu, _ = delta(before["extra"], after["extra"], "cpu_ticks")
    manager_cpu = after["manager"]["cpu_ticks"] - before["manager"]["cpu_ticks"]
    requests = max(sample["requests"], 1)
    wrk_cpu = (usage_after.ru_utime + usage_after.ru_stime
               - usage_before.ru_utime - usage_before.ru_stime)
    busy = (after["busy"] - before["busy"]) / TICKS
    observer_ticks = 0
    if observer and None not in (before["observer"]["ticks"], after["observer"]["ticks"]):
        observer_ticks = after["observer"]["ticks"] - before["observer"]["ticks"]
    own = (child_cpu + extra_cpu + manager_cpu + observer_ticks + after["self"]["cpu_ticks"]
           - before["self"]["cpu_ticks"]) / TICKS + wrk_cpu
    sample.update({
        "wall_s": wall,
        "children_alive": alive,
        "children_minflt": minflt,
        "faults_per_request": minflt / requests,
        "front_minflt_per_request": extra_minflt / requests,  # nginx's worker (php-fpm only)
        "machine_faults_per_s": (after["pgfault"] - before["pgfault"]) / wall,
        "server_cpu_ms_per_request": (child_cpu + extra_cpu + manager_cpu) / TICKS * 1e3 / requests,
        "wrk_cpu_s": wrk_cpu,
        "machine_busy_cpus": busy / wall,
        "steal_cpus": (after["steal"] - before["steal"]) / TICKS / wall,
        # Busy CPU not charged to the server, wrk, the observer or us: other work on the
        # machine (and softirq time charged to no task).
        "unaccounted_cpus": max(0.0, busy - own) / wall,
    })
    if observer:
        o_before, o_after = before["observer"], after["observer"]
        cpu = {"stat_percent": None, "sched_percent": None, "ticks": None, "sched_ns": None,
               "ticks_per_s": TICKS}
        if o_before["ticks"] is not None and o_after["ticks"] is not None:
            cpu["ticks"] = o_after["ticks"] - o_before["ticks"]
            cpu["stat_percent"] = cpu["ticks"] / TICKS / wall * 100
        if o_before["sched_ns"] is not None and o_after["sched_ns"] is not None:
            cpu["sched_ns"] = o_after["sched_ns"] - o_before["sched_ns"]
            cpu["sched_percent"] = cpu["sched_ns"] / 1e9 / wall * 100
        sample["observer"].update(cpu)
    # Left out of the figures: runs with another fault observer on the machine (not ours),
    # runs with failed requests.
    reasons = []
    if foreign:
        reasons.append(f"{foreign} fault program(s) of another observer attached")
    during = sample["fault_programs_during"]
    if None not in during and during[0] != during[1]:
        reasons.append("fault programs came or went during the run")
    if sample["non_2xx"] or sample["socket_errors"]:
        reasons.append(f"{sample['non_2xx']} non-2xx responses, {sample['socket_errors']} "
                       "socket errors")
    if sample["unaccounted_cpus"] > args.busy_limit:
        reasons.append(f"other work on the machine (> {args.busy_limit:.2f} CPU)")
    sample["left_out"] = "; ".join(reasons)
    sample["used"] = not reasons
    return sample


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values)}


def results_of(samples):
    out = {}
    used = [s for s in samples if s["used"]]
    for server in SERVERS:
        for handler in HANDLERS:
            cell = [s for s in used if s["server"] == server and s["handler"] == handler]
            base = [s for s in cell if s["condition"] == "none"]
            base_rps = statistics.median([s["rps"] for s in base]) if base else None
            base_p99 = statistics.median([s["latency_ms"]["p99"] for s in base]) if base else None
            base_by_round = {s["round"]: s for s in base}
            for condition in CONDITIONS:
                runs = [s for s in cell if s["condition"] == condition]
                if not runs:
                    continue
                rps = [s["rps"] for s in runs]
                p99 = [s["latency_ms"]["p99"] for s in runs]
                paired_rps = [s["rps"] / base_by_round[s["round"]]["rps"] for s in runs
                              if s["round"] in base_by_round]
                paired_p99 = [s["latency_ms"]["p99"] / base_by_round[s["round"]]["latency_ms"]["p99"]
                              for s in runs if s["round"] in base_by_round]
                r = {"runs": len(runs), "rps": summary(rps), "p99_ms": summary(p99),
                     "p50_ms": summary([s["latency_ms"].get("p50") for s in runs]),
                     "rps_ratio": statistics.median(rps) / base_rps if base_rps else None,
                     "p99_ratio": statistics.median(p99) / base_p99 if base_p99 else None,
                     "rps_paired": summary(paired_rps), "p99_paired": summary(paired_p99),
                     "faults_per_request": summary([s["faults_per_request"] for s in runs]),
                     "machine_faults_per_s": summary([s["machine_faults_per_s"] for s in runs]),
                     "server_cpu_ms_per_request": summary([s["server_cpu_ms_per_request"]
                                                           for s in runs]),
                     "unaccounted_cpus": summary([s["unaccounted_cpus"] for s in runs])}
                if condition != "none":
                    r["observer_cpu_stat_percent"] = summary(
                        [s["observer"].get("stat_percent") for s in runs])
                    r["observer_cpu_sched_percent"] = summary(
                        [s["observer"].get("sched_percent") for s in runs])
                    r["observer_startup_s"] = summary([s["observer"]["startup_s"] for s in runs])
                out.setdefault(server, {}).setdefault(handler, {})[condition] = r
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kidreaper", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=3, help="per run of wrk")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk, not counted, before each server's and handler's "
                             "runs in each round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bpftrace", default="/usr/bin/bpftrace")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--busy-limit", type=float, default=0.25,
                        help="leave out a run during which other work used more CPU than this")
    parser.add_argument("--retries", type=int, default=2,
                        help="runs again a run left out, at most this many times")
    parser.add_argument("--retry-seconds", type=float, default=90,
                        help="at most this much time in runs again, in all")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("servers.py: loads BPF programs: run as root")
    args.wrk = find_program(["wrk"])
    args.kidreaper = os.path.abspath(args.kidreaper)
    conditions = [c for c in args.conditions.split(",") if c]
    bpftrace_skipped = ""
    if "bpftrace" in conditions:
        if not os.access(args.bpftrace, os.X_OK):
            bpftrace_skipped = f"{args.bpftrace} not found"
        elif not os.path.isdir("/sys/kernel/tracing/events"):
            bpftrace_skipped = "tracefs not mounted at /sys/kernel/tracing"
        if bpftrace_skipped:
            conditions.remove("bpftrace")
            print(f"servers: bpftrace skipped: {bpftrace_skipped}", file=sys.stderr)


    def on_signal(number, _frame):
        raise SystemExit(128 + number)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, on_signal)

    started = time.monotonic()
    machine = machine_facts()
    directory = tempfile.mkdtemp(prefix="kr-bench-servers-")
    os.chmod(directory, 0o755)  # php-fpm's children and nginx's worker run as nobody
    procs = Processes(directory)
    try:
        servers = [PhpFpm(procs, directory), Gunicorn(procs, directory)]
        print(f"servers: {servers[0].version}; {servers[1].version}", file=sys.stderr)
        load_before = read("/proc/loadavg").strip()
        samples = []
        retry_seconds_left = args.retry_seconds
        cells = [(s, h) for s in servers for h in HANDLERS]
        for round_index in range(args.rounds):
            for cell_index, (server, handler) in enumerate(cells):
                shift = round_index + cell_index
                order = conditions[shift % len(conditions):] + conditions[:shift % len(conditions)]
                # The first run after a switch of handler ran slower in trials, whatever its
                # condition: a short run of wrk, not counted, takes that.
                if args.warmup > 0:
                    run_wrk(procs, args.wrk, server.urls[handler], args.warmup, args.connections,
                            args.threads, directory)
                for position, condition in enumerate(order):
                    for attempt in range(1 + args.retries):
                        sample = measure(args, procs, servers, server, handler, condition,
                                         directory)
                        sample.update({"round": round_index + 1, "position": position,
                                       "attempt": attempt + 1})
                        samples.append(sample)
                        print(f"servers: round {round_index + 1}/{args.rounds} {server.name} "
                              f"{handler} {condition}: {sample['rps']:.0f} req/s, p99 "
                              f"{sample['latency_ms'].get('p99', 0):.2f} ms, "
                              f"{sample['faults_per_request']:.0f} faults/request"
                              + (f" (left out: {sample['left_out']})" if sample["left_out"]
                                 else ""), file=sys.stderr)
                        # A run spoiled by other work is tried again at once, within a
                        # budget of extra time for the whole benchmark.
                        if sample["used"] or retry_seconds_left < args.seconds:
                            break
                        retry_seconds_left -= sample["wall_s"]
        load_after = read("/proc/loadavg").strip()
        doc = {
            "benchmark": "servers",
            "machine": machine,
            "rounds": args.rounds, "seconds": args.seconds, "warmup_s": args.warmup,
            "busy_limit": args.busy_limit, "retries": args.retries,
            "retry_seconds": args.retry_seconds,
            "connections": args.connections, "threads": args.threads,
            "children": CHILDREN, "alloc_bytes": ALLOC_BYTES, "page_bytes": PAGE,
            "conditions": conditions, "kidreaper": args.kidreaper,
            "kidreaper_args": "reap --pid MANAGER --limit 100GiB --interval 1s --server NAME "
                              "--log-format json",
            "bpftrace": args.bpftrace if "bpftrace" in conditions else "",
            "bpftrace_skipped": bpftrace_skipped, "bpftrace_script": BPFTRACE_SCRIPT,
            "servers": [{"name": s.name, "label": LABELS[s.name], "version": s.version,
                         "urls": s.urls} for s in servers],
            "handlers": {"php-fpm": {"alloc": PHP_ALLOC, "tiny": PHP_TINY},
                         "gunicorn": FLASK_APP},
            "loadavg_before": load_before, "loadavg_after": load_after,
            "samples": samples,
            "results": results_of(samples),
            "elapsed_s": time.monotonic() - started,
        }
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    finally:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)  # let the cleanup finish
        procs.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(f"servers.py: {error}")

#!/usr/bin/env python3
"""A helper child of a pre-fork manager for kidreaper's end-to-end tests: big, and never a worker.

It stands for an Apache piped logger (`ErrorLog "|python3 helper_hog.py --copy-to FILE ..."`) or a
uWSGI attached daemon (`--attach-daemon "exec python3 helper_hog.py ..."`). It keeps --mb MiB of
private memory (every page written), so a limit meant for the workers would recycle it if it were
taken for one, and it writes down every signal it receives, so a test can prove it got none:

  --mb N            private memory to hold (default 40)
  --signals FILE    appends "SIGNAME\\n" for each signal received; TERM, INT, QUIT and HUP then
                    end it as they would have by default
  --copy-to FILE    copies stdin to FILE until end of file, then exits (a piped logger);
                    without it, waits for a signal or the end of its lifetime (a daemon)
  --max-lifetime S  exits after S seconds (default 600), and as soon as its parent changes (the
                    manager is gone), so nothing outlives a killed test

Stdlib only.
"""
import argparse
import os
import signal
import sys
import threading
import time

MiB = 1024 * 1024
PAGE = 4096
FATAL = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}
RECORDED = FATAL | {signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGCONT,
                    signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGURG, signal.SIGPIPE}


def hold_memory(mib):
    block = bytearray(mib * MiB)
    for offset in range(0, len(block), PAGE):
        block[offset] = 1  # a written page is private; an untouched one is not even resident
    return block


def record_signals(path):
    def on_signal(signum, _frame):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{signal.Signals(signum).name}\n".encode())
        finally:
            os.close(fd)
        if signum in FATAL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for signum in RECORDED:
        signal.signal(signum, on_signal)


def end_with_parent_or_lifetime(seconds):
    parent = os.getppid()
    deadline = time.monotonic() + seconds

    def watch():
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="lifetime", daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--signals", required=True)
    parser.add_argument("--copy-to")
    parser.add_argument("--max-lifetime", type=float, default=600)
    args = parser.parse_args()

    record_signals(args.signals)
    end_with_parent_or_lifetime(args.max_lifetime)
    held = hold_memory(args.mb)  # noqa: F841  (held for the process's life)
    if args.copy_to is None:
        while True:
            signal.pause()
    with open(args.copy_to, "ab", buffering=0) as out:
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 65536)
            except InterruptedError:
                continue
            if not chunk:
                return 0
            out.write(chunk)


if __name__ == "__main__":
    sys.exit(main())

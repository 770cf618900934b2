"""The web server: `python -m finstream.serve`, several daphne processes on one port.

One daphne process is one Python thread writing to every WebSocket client it
holds, so one process uses at most one core. Each process here gets a
listening socket of its own on the same port (SO_REUSEPORT), and the kernel
spreads new connections over them; every process runs its own hub
(streaming/hub.py), which receives each relay batch and writes it to that
process's clients, so the processes' rounds of writes run side by side on
separate cores.

The processes share their Prometheus metrics through prometheus_client's
multiprocess mode: /metrics, whichever process answers it, reports the sum
over all of them (PROMETHEUS_MULTIPROC_DIR, a fresh directory per run).

A process that dies is replaced by a new one on a new socket, while the others
go on serving; its own clients lose their connection and reconnect (so do
connections it had not yet accepted). One that dies within STARTUP_SECONDS of
starting stops the server (exit 1): a process that cannot start will not start
the next time either, and the supervisor (supervisord, or the container's
restart policy) reports it. SIGTERM or SIGINT stops every process and waits
for them (exit 0), killing those still running after STOP_SECONDS (daphne
waits for its requests and connections to finish); if this process is
killed, the kernel kills them (Linux's parent-death signal).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from prometheus_client import multiprocess

APPLICATION = "finstream.asgi:application"
STARTUP_SECONDS = 10.0
STOP_SECONDS = 20  # within supervisord's stopwaitsecs (30) and docker's default grace (10 s: compose sets more)
METRICS_DIR_PREFIX = "finstream-web-metrics-"
MAX_PROCESSES = 64


def _count(text: str, *, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """The options; what follows `--` goes to each daphne as it is (`daphne_args`)."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    own, daphne_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m finstream.serve [options] [-- daphne options]",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", default="8000", type=lambda text: _count(text, name="--port", low=1, high=65535),
                        help="port to listen on (default 8000)")
    parser.add_argument("--processes", default=environ.get("WEB_PROCESSES") or "2",
                        type=lambda text: _count(text, name="--processes (WEB_PROCESSES)", low=1,
                                                 high=MAX_PROCESSES),
                        help="daphne processes (default WEB_PROCESSES, or 2)")
    args = parser.parse_args(own)
    # TRUSTED_PROXIES, as the settings read it (no option: the two must agree). Without a proxy in front
    # the X-Forwarded-* headers are the client's own words: an https it never used, an address it made up.
    try:
        proxies = _count(environ.get("TRUSTED_PROXIES") or "0", name="TRUSTED_PROXIES", low=0, high=10)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    args.daphne_args = (["--proxy-headers"] if proxies else []) + daphne_args
    return args


def bound_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A socket bound to host:port; `shared`, other processes' sockets may listen there too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind((host, port))
    except BaseException:
        bound.close()
        raise
    return bound


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int):
    """For a child, before it runs daphne: killed when `parent` dies, however it dies. A daphne
    process left behind would keep serving on the port, and the next server could not start."""
    def set_up() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before that took effect
            os._exit(1)
    return set_up


class WebServer:
    def __init__(self, host: str, port: int, processes: int, daphne_args: list[str]) -> None:
        self.host, self.port, self.processes, self.daphne_args = host, port, processes, daphne_args
        _remove_stale_metrics_dirs()
        self.metrics_dir = os.path.join(tempfile.gettempdir(), f"{METRICS_DIR_PREFIX}{os.getpid()}")
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        os.mkdir(self.metrics_dir)
        self.children: dict[int, tuple[subprocess.Popen, float]] = {}  # pid -> (process, started at)
        self.stopping = False

    def start_process(self) -> None:
        listener = bound_socket(self.host, self.port, shared=True)
        try:
            listener.listen(1024)
            child = subprocess.Popen(
                [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), *self.daphne_args,
                 APPLICATION],
                pass_fds=(listener.fileno(),), env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir},
                preexec_fn=_die_with(os.getpid()),
            )
        finally:
            # The child holds the socket now. Were this process to keep it too, the kernel would go on
            # handing connections to it after the child died, and nobody would accept them.
            listener.close()
        self.children[child.pid] = (child, time.monotonic())
        if self.stopping:  # a stop signal came while it started
            os.kill(child.pid, signal.SIGTERM)

    def stop(self, signum=None, _frame=None) -> None:
        if not self.stopping:
            signal.signal(signal.SIGALRM, self._kill)
            signal.alarm(STOP_SECONDS)
        self.stopping = True
        self._signal_children(signal.SIGTERM)

    def _kill(self, signum=None, _frame=None) -> None:
        print(f"daphne processes still running {STOP_SECONDS} s after SIGTERM: killing them", file=sys.stderr,
              flush=True)
        self._signal_children(signal.SIGKILL)

    def _signal_children(self, signum: int) -> None:
        # os.kill, not Popen.send_signal: that would reap a process that has exited, which only
        # run() may do. A child stays in self.children until run() has reaped it, and until then
        # its pid is not reused, so this never signals another process.
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        """Serve until stopped (0) or a process fails at start-up (1)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            for _ in range(self.processes):
                self.start_process()
            print(f"serving http://{self.host}:{self.port} with {self.processes} daphne process(es): pids "
                  f"{', '.join(map(str, self.children))}", flush=True)
            failed = False
            while self.children:
                # Which child exited, without reaping it: a signal handler that runs meanwhile must
                # find it still in self.children, its pid still its own.
                pid = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid
                child, started = self.children.pop(pid, (None, 0.0))
                status = os.waitpid(pid, 0)[1]
                if child is None:
                    continue
                child.returncode = os.waitstatus_to_exitcode(status)
                multiprocess.mark_process_dead(pid, self.metrics_dir)  # its connections no longer count
                if self.stopping:
                    continue
                if time.monotonic() - started < STARTUP_SECONDS:
                    print(f"daphne process {pid} exited {child.returncode} within {STARTUP_SECONDS:.0f} s of "
                          f"starting: stopping the server", file=sys.stderr, flush=True)
                    failed = True
                    self.stop()
                    continue
                print(f"daphne process {pid} exited {child.returncode}: starting another", file=sys.stderr,
                      flush=True)
                self.start_process()
            return 1 if failed else 0
        finally:
            self.stop()
            for child, _ in self.children.values():
                child.wait()
            signal.alarm(0)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def _remove_stale_metrics_dirs() -> None:
    """Metrics directories of servers that were killed (they remove their own when they stop)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name.removeprefix(METRICS_DIR_PREFIX)
        if name.startswith(METRICS_DIR_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # Not shared: a port another server listens on, even one that shares it (an earlier
        # finstream.serve still running), is refused here instead of being silently split with it.
        bound_socket(args.bind, args.port, shared=False).close()
    except OSError as error:
        print(f"cannot listen on {args.bind}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 2
    return WebServer(args.bind, args.port, args.processes, args.daphne_args).run()


if __name__ == "__main__":
    sys.exit(main())

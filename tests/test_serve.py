"""`python -m finstream.serve`: several daphne processes on one port, run for real on the test
database and Redis, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from finstream import serve
from market.services import symbols_seed
from streaming.relay import RelayPipeline
from streaming.testing import wait_for
from streaming.tests.test_websockets import trade
from streaming.tests.test_websockets_live import TIMEOUT, free_port, receive, server_env
from streaming.topics import TRADES

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 16


# --- options ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--processes", "0"], "between 1 and 64, not 0"),
    (["--processes", "65"], "between 1 and 64, not 65"),
    (["--processes", "two"], "whole number, not 'two'"),
    (["--port", "0"], "between 1 and 65535, not 0"),
])
def test_bad_options_are_refused_with_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        serve.parse_args(argv, environ={})
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_what_follows_a_double_dash_goes_to_daphne():
    args = serve.parse_args(["--port", "9000", "--", "--access-log", "/dev/null"], environ={})
    assert (args.port, args.daphne_args) == (9000, ["--access-log", "/dev/null"])
    assert serve.parse_args(["--port", "9000"], environ={}).daphne_args == []


def test_daphne_trusts_proxy_headers_only_with_a_proxy_in_front(capsys):
    assert "--proxy-headers" not in serve.parse_args([], environ={}).daphne_args
    assert serve.parse_args([], environ={"TRUSTED_PROXIES": "0"}).daphne_args == []
    assert serve.parse_args([], environ={"TRUSTED_PROXIES": "1"}).daphne_args == ["--proxy-headers"]
    with pytest.raises(SystemExit):
        serve.parse_args([], environ={"TRUSTED_PROXIES": "lots"})
    assert "TRUSTED_PROXIES must be a whole number" in capsys.readouterr().err


def test_the_process_count_comes_from_web_processes_unless_given():
    assert serve.parse_args([], environ={}).processes == 2
    assert serve.parse_args([], environ={"WEB_PROCESSES": "3"}).processes == 3
    assert serve.parse_args(["--processes", "1"], environ={"WEB_PROCESSES": "3"}).processes == 1


def test_a_port_another_server_listens_on_is_refused_even_one_that_shares_it():
    for shared in (False, True):
        with serve.bound_socket("127.0.0.1", 0, shared=shared) as other:
            other.listen()
            port = other.getsockname()[1]
            done = subprocess.run([sys.executable, "-m", "finstream.serve", "--port", str(port)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


# --- running ---------------------------------------------------------------------------
class Server:
    def __init__(self, processes: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "finstream.serve", "--port", str(self.port), "--processes", str(processes)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.serving_since: float | None = None
        self.output: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.output.extend(line.decode() for line in self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def log(self) -> str:
        return "".join(self.output)

    def wait_exit(self, timeout: float = 60) -> int:
        """Its exit code, once all it printed has been read."""
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout)  # ends when the last copy of the pipe (the children's too) closes
        return code

    def wait_serving(self) -> None:
        def serving():
            assert self.process.poll() is None, self.log[-3000:]
            with socket.socket() as probe:
                return "serving" in self.log and probe.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(serving, timeout=60, what="finstream.serve listening")
        self.serving_since = time.monotonic()  # its processes started before it said so

    def connections_per_process(self) -> dict[int, int]:
        """Established connections to the port, by the daphne process that holds them."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[3] == "01":
                        inodes.add(fields[9])
        held = {}
        for pid in self.children():
            links = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except FileNotFoundError:
                    continue
            held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        return held

    def children(self) -> list[int]:
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as listing:
            return [int(pid) for pid in listing.read().split()]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=TIMEOUT) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()


@pytest.fixture
def server_factory(django_db_setup):
    servers = []

    def start(processes: int, **env: str) -> Server:
        server = Server(processes, {**server_env(), **env})
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_the_port_and_every_client_gets_the_relay_batches(redis_clean, server_factory):
    symbols_seed(tickers=["AAPL"])
    server = server_factory(2)
    server.wait_serving()
    url, origin = f"ws://127.0.0.1:{server.port}/ws/trades/AAPL", f"http://127.0.0.1:{server.port}"
    relay = RelayPipeline()

    async def every_client_receives(clients, first: int, last: int) -> None:
        await asyncio.to_thread(relay.publish, {TRADES: [trade(i) for i in range(first, last + 1)]})
        for client in clients:
            assert [(await receive(client))["seq"] for _ in range(first, last + 1)] == list(range(first, last + 1))

    async def scenario():
        clients = [await websockets.connect(url, origin=origin, open_timeout=TIMEOUT) for _ in range(CLIENTS)]
        try:
            held = server.connections_per_process()
            assert sorted(held) == sorted(server.children()) and len(held) == 2
            assert sum(held.values()) == CLIENTS and min(held.values()) > 0, held  # the kernel spread them
            # Whichever process answers /metrics, it counts every process's clients.
            for _ in range(4):
                assert await asyncio.to_thread(server.metric, "finstream_websocket_connections") == CLIENTS
            await every_client_receives(clients, 1, 3)

            # A process that dies after start-up is replaced; the other one's clients never notice.
            await asyncio.sleep(max(0.0, serve.STARTUP_SECONDS + 3 - (time.monotonic() - server.serving_since)))
            victim = min(held, key=held.get)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: "starting another" in server.log and len(server.children()) == 2
                     and victim not in server.children(), timeout=TIMEOUT, what="a replacement process")
            survivors = []
            for client in clients:
                try:
                    await asyncio.wait_for(client.recv(), 0.5)  # only a close can arrive now
                except asyncio.TimeoutError:
                    survivors.append(client)
                except websockets.ConnectionClosed:
                    pass
            assert len(survivors) == CLIENTS - held[victim]
            wait_for(lambda: server.metric("finstream_websocket_connections") == len(survivors), timeout=TIMEOUT,
                     what="the dead process's connections no longer counted")
            await every_client_receives(survivors, 4, 5)
            newcomer = await websockets.connect(url, origin=origin, open_timeout=TIMEOUT)
            clients.append(newcomer)
            await every_client_receives([*survivors, newcomer], 6, 6)
        finally:
            for client in clients:
                await client.close()

    asyncio.run(scenario())
    children = server.children()
    assert server.stop() == 0, server.log[-3000:]
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)


@pytest.mark.django_db(transaction=True)
def test_a_process_that_fails_at_start_up_stops_the_server(server_factory):
    server = server_factory(2, CHANNEL_LAYER="nonsense")  # settings refuse it: daphne exits at import
    assert server.wait_exit(timeout=120) == 1
    assert "within 10 s of starting: stopping the server" in server.log
    assert "CHANNEL_LAYER='nonsense'" in server.log


@pytest.mark.django_db(transaction=True)
def test_killed_it_takes_its_processes_with_it_and_the_port_is_free_again(server_factory):
    server = server_factory(2)
    server.wait_serving()
    children = server.children()
    server.process.kill()
    server.process.wait()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), timeout=TIMEOUT,
             what="its daphne processes to stop")
    with serve.bound_socket("127.0.0.1", server.port, shared=False):
        pass


@pytest.mark.django_db(transaction=True)
def test_a_throttled_request_has_a_named_status_line(redis_clean, server_factory):
    import http.client

    server = server_factory(1, API_THROTTLE_ANON="1/min")
    server.wait_serving()
    statuses = []
    for _ in range(2):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        connection.request("GET", "/api/v1/symbols")
        response = connection.getresponse()
        statuses.append((response.status, response.reason))
        connection.close()
    assert statuses == [(200, "OK"), (429, "Too Many Requests")]  # Twisted's own table had "Unknown Status"

"""WebSocket fan-out: relay -> channel layer -> daphne -> N real clients.

Two parts, both printing figures and ratios (nothing is written to a file):

1. `layers`: how fast each channels-redis layer takes group_send calls, one
   event per call (what a naive relay does) and one batch per call to one
   group (what streaming/relay.py does; --groups spreads the calls over
   more), with a member per group that does not read: the relay's own
   ceiling.
2. `fanout`: the whole path, as the stack runs it, started here on the stack's
   Kafka, PostgreSQL and Redis with topics and a consumer group of its own:
   `manage.py simulate` at --rate trades/s -> Kafka -> the relay (on the
   shared runner; the broker holds its fetches --relay-wait-ms, the batch
   wait) -> the channel layer -> the web processes (finstream.serve) ->
   --clients WebSocket clients on /ws/trades/{symbol}, spread over the
   symbols. The clients are bench/wsload (Go, a minimal client of its own,
   built here with `go build`, at nice --client-nice): at 10k trades/s and
   1,000 clients they read ~1M messages/s, which Python clients on the same
   two cores cannot. Latency is
   each trade's event time (`data.ts`, stamped by the simulator) -> its
   arrival in the client's socket (kernel timestamp) and -> its read by the
   client. Reports messages received against those expected (the relay's
   per-symbol counters x each symbol's clients), gaps (seq jumps), clients
   closed by the server, daphne's RSS and each process's CPU. Runs the relay
   batched and with one group_send per event and prints the ratio. Every
   topic it creates is deleted at the end.

    var/venv/bin/python bench/websocket_fanout.py layers --events 20000
    var/venv/bin/python bench/websocket_fanout.py fanout --clients 1000 --rate 10000 --duration 30

Needs the stack's PostgreSQL, Redis and (fanout) Kafka (`make up`, or the
env of a test stack: TIMESCALE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS), and
Go for the clients. Runs only against 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

from bench.procstat import cpu_seconds, free_port, machine_busy, rss_mib  # noqa: E402 - needs ROOT on the path


def setup_django(layer: str | None = None) -> None:
    if layer:
        os.environ["CHANNEL_LAYER"] = layer
    import django

    django.setup()


# --- part 1: the layers ----------------------------------------------------------------
async def _layer_rate(layer, *, events: int, batch: int, groups: int) -> float:
    message = {"type": "stream.batch", "channels": {"trades.AAPL": [
        [i, '{"type":"trade","channel":"trades.AAPL","seq":1,"data":{"id":"x","price":"1"}}'] for i in range(batch)]}}
    calls = events // batch
    start = time.perf_counter()
    for i in range(calls):
        await layer.group_send(f"fs.bench.{i % groups}", message)
    return calls * batch / (time.perf_counter() - start)


def bench_layers(args) -> None:
    setup_django()
    import logging

    logging.getLogger("channels_redis").setLevel(logging.WARNING)  # "over capacity": nobody reads here
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from django.conf import settings

    print(f"group_send throughput, {args.events} events, sequential awaits, Redis {settings.REDIS_URL}")
    results = {}
    for name, factory in (("RedisChannelLayer", lambda: RedisChannelLayer(hosts=[settings.REDIS_URL])),
                          ("RedisPubSubChannelLayer", lambda: RedisPubSubChannelLayer(hosts=[settings.REDIS_URL]))):
        for batch in (1, args.batch):
            async def run():
                layer = factory()
                # members, so that RedisChannelLayer does its real per-member work
                for g in range(args.groups):
                    for _ in range(args.members):
                        channel = await layer.new_channel()
                        await layer.group_add(f"fs.bench.{g}", channel)
                rate = await _layer_rate(layer, events=args.events, batch=batch, groups=args.groups)
                await layer.flush()
                return rate

            rate = asyncio.run(run())
            results[(name, batch)] = rate
            print(f"  {name:24s} {'per event' if batch == 1 else f'batches of {batch}':>16s}: {rate:10.0f} events/s")
    for name in ("RedisChannelLayer", "RedisPubSubChannelLayer"):
        print(f"  {name}: batching x{results[(name, args.batch)] / results[(name, 1)]:.0f}")
    print(f"  pubsub / core, per event: x{results[('RedisPubSubChannelLayer', 1)] / results[('RedisChannelLayer', 1)]:.1f}"
          f"; batched: x{results[('RedisPubSubChannelLayer', args.batch)] / results[('RedisChannelLayer', args.batch)]:.1f}")


# --- part 2: fan-out to real clients ------------------------------------------------------
WSLOAD = ROOT / "bench" / "wsload"  # the Go client (bench/wsload/main.go)


def _stack_pids() -> dict[str, list[int]]:
    """This stack's Kafka broker and Redis server (started by `make up`, not by this bench): known by
    the broker's config under FINSTREAM_VAR and Redis' port, so that another stack on the machine (a
    test run's) is not counted."""
    from django.conf import settings

    var = os.environ.get("FINSTREAM_VAR", str(ROOT / "var"))
    kafka_config = f"{var}/kafka/server.properties".encode()
    redis_address = f"127.0.0.1:{urlsplit(settings.REDIS_URL).port or 6379}".encode()
    found: dict[str, list[int]] = {"kafka": [], "redis": []}
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            continue
        if b"kafka.Kafka" in command and kafka_config in command:
            found["kafka"].append(int(entry.name))
        elif command.startswith(b"redis-server") and redis_address in command:
            found["redis"].append(int(entry.name))
    for name, pids in found.items():
        if not pids:
            print(f"  (no {name} process of this stack found: its CPU reads 0)")
    return found


def _build_wsload() -> Path:
    binary = ROOT / "var" / "bench" / "wsload"
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=WSLOAD, check=True)
    return binary


def _wait_listening(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


def _served_by(server_log) -> list[int]:
    """The daphne pids finstream.serve reports once it has started them all."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server_log.seek(0)
        for line in server_log:
            if line.startswith("serving "):
                return [int(pid) for pid in line.split("pids", 1)[1].replace(",", " ").split()]
        time.sleep(0.1)
    raise SystemExit("finstream.serve did not report its processes")


def _wait_until_delivered(clients: subprocess.Popen, *, quiet: float = 1.0, limit: float = 60.0) -> None:
    """Until the clients' count has not moved for `quiet` seconds: daphne may still be writing
    what the relay sent before it stopped."""
    last, still_since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        clients.stdin.write("count\n")
        clients.stdin.flush()
        count = int(clients.stdout.readline())
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        time.sleep(0.25)
    print(f"  (clients were still receiving {limit:.0f} s after the relay stopped)")


def _trade_counters(symbols: list[str]) -> dict[str, int]:
    """The relay's per-channel seq counters: how many trades it has relayed per symbol, ever."""
    from streaming.redis import redis_client
    from streaming.relay import CHANNEL_KEY

    pipe = redis_client().pipeline(transaction=False)
    for symbol in symbols:
        pipe.hget(CHANNEL_KEY.format(f"trades.{symbol}"), "seq")
    return {symbol: int(value or 0) for symbol, value in zip(symbols, pipe.execute())}


def _published_trades(prefix: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    from django.conf import settings

    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "group.id": "bench-watermarks"})
    try:
        name = f"{prefix}market.trades"
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def _manage(*args: str, env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, **popen)


def _run_fanout(args, *, per_event: bool, wsload: Path, prefix: str) -> dict:
    """One mode's run, on topics and a consumer group under `prefix` (nothing left from another run is
    relayed)."""
    setup_django(args.layer)
    from django.conf import settings

    from market.services import symbols_seed

    symbols = settings.SYMBOLS[: args.symbols]
    symbols_seed(tickers=symbols)
    env = {**os.environ, "CHANNEL_LAYER": args.layer, "DJANGO_DEBUG": "0", "DATABASE_POOL_SIZE": "10",
           "KAFKA_TOPIC_PREFIX": prefix, "KAFKA_CONSUMER_GROUP_PREFIX": prefix + "group",
           "METRICS_PORT": "0", "OTEL_SDK_DISABLED": "true",
           **({"RELAY_BATCH_WAIT_MS": str(args.relay_wait_ms)} if args.relay_wait_ms is not None else {}),
           **({"KAFKA_PRODUCER_LINGER_MS": str(args.linger_ms)} if args.linger_ms is not None else {}),
           **({"WEB_PROCESSES": str(args.web_processes)} if args.web_processes is not None else {}),
           "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)}
    subprocess.run([sys.executable, "manage.py", "kafka_topics"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    processes: list[subprocess.Popen] = []
    try:
        relay = _manage("relay_streams", *(["--per-event"] if per_event else []), env=env)
        processes.append(relay)
        # The web server as the stack runs it: daphne processes sharing one port (finstream/serve.py).
        port = free_port()
        server_log = tempfile.TemporaryFile(mode="w+")
        server = subprocess.Popen([sys.executable, "-m", "finstream.serve", "--port", str(port)],
                                  cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.DEVNULL)
        processes.append(server)
        _wait_listening(port, server, "finstream.serve")
        daphnes = _served_by(server_log)
        # The clients stand in for other machines: at a lower priority they take the CPU the server
        # leaves, not the CPU it needs (their wait for a core still counts in the latency on read).
        clients = subprocess.Popen(["nice", "-n", str(args.client_nice), str(wsload), "-url", f"ws://127.0.0.1:{port}",
                                    "-clients", str(args.clients), "-symbols", ",".join(symbols)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(clients)
        ready = clients.stdout.readline().split()
        ready_at = time.monotonic()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"wsload: {ready}")
        counters = _trade_counters(symbols)
        measured = {"daphne": daphnes, "relay": [relay.pid], "clients": [clients.pid],
                    **_stack_pids()}
        cpu = {name: sum(map(cpu_seconds, pids)) for name, pids in measured.items()}
        rss_start = max(map(rss_mib, daphnes))
        machine = machine_busy()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        simulator = _manage("simulate", "--rate", str(args.rate), "--duration", str(args.duration),
                            "--seed", "7", "--fresh", "--symbols", ",".join(symbols), env=env,
                            stdout=subprocess.DEVNULL)
        processes.append(simulator)
        rss = []
        while simulator.poll() is None:
            time.sleep(1)
            rss.append(max(map(rss_mib, daphnes)))
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the simulator was reaped meanwhile
        simulator_cpu = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
        time.sleep(args.tail)  # what is still on its way
        elapsed = time.monotonic() - started
        cpu = {name: (sum(map(cpu_seconds, pids)) - cpu[name]) / elapsed for name, pids in measured.items()}
        cpu["simulator"] = simulator_cpu / elapsed
        busy, total = (now - before for now, before in zip(machine_busy(), machine))
        cpu["machine"] = busy / total
        # The relay stops before its counters are read: one still catching up (per event) would
        # otherwise send more than they say, and the clients would seem to get more than was owed.
        relay.terminate()
        relay.wait(30)
        _wait_until_delivered(clients)
        relayed = {symbol: count - counters[symbol] for symbol, count in _trade_counters(symbols).items()}
        steady_from = math.ceil(started - ready_at + args.warmup)
        summary = json.loads(clients.communicate(f"stop {steady_from}\n", timeout=120)[0].strip().splitlines()[-1])
        followers = {symbol: 0 for symbol in symbols}
        for index in range(summary["open"]):
            followers[symbols[index % len(symbols)]] += 1
        return {**summary, "published": _published_trades(prefix), "relayed": sum(relayed.values()),
                "expected": sum(relayed[symbol] * followers[symbol] for symbol in symbols),
                "elapsed": elapsed, "cpu": cpu, "rss_start": rss_start, "rss_end": max(map(rss_mib, daphnes)),
                "rss_max": max(rss, default=rss_start)}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def bench_fanout(args) -> None:
    wsload = _build_wsload()
    linger = "the setting's" if args.linger_ms is None else f"{args.linger_ms} ms"
    relay_wait = "the setting's" if args.relay_wait_ms is None else f"{args.relay_wait_ms} ms"
    web_processes = "the stack's" if args.web_processes is None else args.web_processes
    print(f"fan-out: simulator at {args.rate} trades/s for {args.duration} s over {args.symbols} symbols (producer "
          f"linger {linger}) -> Kafka -> relay_streams (batch wait {relay_wait}) -> {args.layer} channel "
          f"layer -> {web_processes} daphne process(es) on one port -> {args.clients} clients on /ws/trades/{{symbol}} (Go, "
          f"bench/wsload, nice {args.client_nice}), all on this machine")
    figures = {}
    prefixes = []
    try:
        for mode, per_event in (("batched", False), ("per-event", True)):
            if not args.only or args.only == mode:
                prefixes.append(f"bench-ws-{os.getpid()}-{mode}.")
                figures[mode] = _run_fanout(args, per_event=per_event, wsload=wsload, prefix=prefixes[-1])
                _print_fanout(args, mode, figures[mode])
    finally:
        if prefixes:  # after the last run: the broker removes the files under the next run otherwise
            from streaming.kafka import topics_delete

            topics_delete(*prefixes)
    if len(figures) == 2:
        b, p = figures["batched"], figures["per-event"]
        print(f"  batched / per-event: received x{b['messages'] / max(p['messages'], 1):.2f}, "
              f"p99 latency (on read, whole run) x{p['read']['p99_ms'] / max(b['read']['p99_ms'], 0.001):.1f} lower")


def _print_fanout(args, mode: str, r: dict) -> None:
    delivered = r["messages"] / r["elapsed"]
    print(f"  {mode:9s}: {r['published']} trades published, {r['relayed']} relayed; clients received "
          f"{r['messages']}/{r['expected']} messages ({delivered:,.0f}/s); gaps {r['gaps']}; "
          f"clients open {r['open']}, refused {r['refused']}, closed by the server {r['closed']} "
          f"(4008: {r['dropped']}); daphne RSS (largest) {r['rss_start']:.0f} -> {r['rss_end']:.0f} MiB "
          f"(max {r['rss_max']:.0f}); CPU (of one core): daphne(s) {r['cpu']['daphne']:.0%}, relay "
          f"{r['cpu']['relay']:.0%}, clients {r['cpu']['clients']:.0%}, simulator {r['cpu']['simulator']:.0%}, "
          f"Kafka broker {r['cpu']['kafka']:.0%}, Redis {r['cpu']['redis']:.0%}; "
          f"the machine's cores {r['cpu']['machine']:.0%} busy")
    for name, latency in (("arrival in the client's socket", r["arrival"]), ("read by the client", r["read"])):
        print(f"    event time -> {name}: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
              f"max {latency['max_ms']:.0f} ms; after the first {args.warmup:.0f} s: p50 "
              f"{latency['steady_p50_ms']:.1f} ms, p99 {latency['steady_p99_ms']:.1f} ms, max "
              f"{latency['steady_max_ms']:.0f} ms")
    if r["unstamped"]:
        print(f"    warning: {r['unstamped']} messages came without a kernel receive timestamp; their arrival "
              f"is their read time")
    timeline = sorted((int(second), values) for second, values in r["seconds"].items())
    print("    per second of arrival since the clients connected (messages, p50/p99 ms on arrival, on read): "
          + "; ".join(f"{second}: {count / 1000:.0f}k {arrival_p50:.0f}/{arrival_p99:.0f}, "
                      f"{read_p50:.0f}/{read_p99:.0f}"
                      for second, (count, arrival_p50, arrival_p99, read_p50, read_p99) in timeline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    layers = sub.add_parser("layers", help="group_send throughput of each channels-redis layer")
    layers.add_argument("--events", type=int, default=20000)
    layers.add_argument("--batch", type=int, default=200, help="events per group_send when batched")
    layers.add_argument("--groups", type=int, default=1, help="groups the calls rotate over")
    layers.add_argument("--members", type=int, default=1, help="channels in each group")
    fanout = sub.add_parser("fanout", help="simulator -> Kafka -> relay -> daphne -> N websocket clients")
    fanout.add_argument("--clients", type=int, default=1000)
    fanout.add_argument("--symbols", type=int, default=10)
    fanout.add_argument("--rate", type=int, default=10000, help="the simulator's trades per second")
    fanout.add_argument("--duration", type=int, default=30, help="seconds the simulator runs")
    fanout.add_argument("--tail", type=float, default=2.0, help="seconds to wait for the last events after it")
    fanout.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of the simulator's start left out of the steady-state latency")
    fanout.add_argument("--relay-wait-ms", type=int,
                        help="the relay's batch wait (RELAY_BATCH_WAIT_MS; default: the setting's)")
    fanout.add_argument("--linger-ms", type=int,
                        help="the simulator's producer linger (KAFKA_PRODUCER_LINGER_MS; default: the setting's)")
    fanout.add_argument("--client-nice", type=int, default=10,
                        help="niceness of the client process (0: the same priority as the server)")
    fanout.add_argument("--layer", choices=("pubsub", "redis"), default="pubsub")
    fanout.add_argument("--web-processes", type=int,
                        help="daphne processes sharing the port (WEB_PROCESSES; default: finstream.serve's)")
    fanout.add_argument("--only", choices=("batched", "per-event"))
    args = parser.parse_args()
    {"layers": bench_layers, "fanout": bench_fanout}[args.part](args)


if __name__ == "__main__":
    main()

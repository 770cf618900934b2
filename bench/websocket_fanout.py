"""WebSocket fan-out: relay -> channel layer -> daphne -> N real clients.

Two parts, both printing figures and ratios (nothing is written to a file):

1. `layers`: how fast each channels-redis layer takes group_send calls, one
   event per call (what a naive relay does) and one batch per call (what
   streaming/relay.py does), with nobody listening: the relay's own ceiling.
2. `fanout`: a daphne started here (on a free port, on this stack's database
   and Redis), N `websockets` clients spread over the symbols
   (/ws/trades/{symbol}), and synthetic trades at a target rate handed to
   RelayPipeline.after_commit every --batch-ms, as the runner would after
   each batch's commit. Event time is stamped at generation, so
   "latency" is generation -> client receive: relay, Redis, daphne and the
   client included (the Kafka leg is not: see the consumer benchmarks).
   Reports delivered messages/s, latency p50/p99, gaps (seq jumps), clients
   dropped, and daphne's RSS at start and end. Runs batched and per-event
   and prints the ratio.

    var/venv/bin/python bench/websocket_fanout.py layers --events 20000
    var/venv/bin/python bench/websocket_fanout.py fanout --clients 1000 --rate 2000 --duration 20

Needs the stack's PostgreSQL (symbols) and Redis (`make up`, or the env of a
test stack: TIMESCALE_URL, REDIS_URL). Runs only against 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")


def setup_django(layer: str | None = None) -> None:
    if layer:
        os.environ["CHANNEL_LAYER"] = layer
    import django

    django.setup()


# --- part 1: the layers ----------------------------------------------------------------
async def _layer_rate(layer, *, events: int, batch: int, groups: int) -> float:
    message = {"type": "stream.batch", "channel": "trades.AAPL",
               "events": [[i, '{"type":"trade","channel":"trades.AAPL","seq":1,"data":{"id":"x","price":"1"}}']
                          for i in range(batch)]}
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
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clients_worker(url: str, symbols: list[str], count: int, offset: int, ready, go, stop, results) -> None:
    """A process holding `count` clients; sends back latencies (s), message count and gaps."""
    import websockets

    async def client(index: int, latencies: list, counts: dict):
        symbol = symbols[(offset + index) % len(symbols)]
        try:
            ws = await websockets.connect(f"{url}/ws/trades/{symbol}", origin=url.replace("ws://", "http://"),
                                          open_timeout=60, max_queue=None)
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
            counts["refused"] += 1
            return
        async with ws:
            counts["open"] += 1
            last = None
            try:
                while True:
                    text = await ws.recv()
                    now = time.time()
                    head, _, data = text.partition(',"data":')
                    seq = int(head.rsplit(":", 1)[1])
                    if last is not None and seq != last + 1:
                        counts["gaps"] += 1
                    last = seq
                    ts = data.split('"ts":"', 1)[1].split('"', 1)[0]
                    latencies.append(now - datetime.fromisoformat(ts).timestamp())
                    counts["messages"] += 1
            except websockets.ConnectionClosed as closed:
                if closed.rcvd and closed.rcvd.code == 4008:
                    counts["dropped"] += 1

    async def main():
        latencies: list[float] = []
        counts = {"open": 0, "refused": 0, "messages": 0, "gaps": 0, "dropped": 0}
        tasks = []
        for index in range(count):
            tasks.append(asyncio.ensure_future(client(index, latencies, counts)))
            if index % 50 == 49:
                await asyncio.sleep(0.05)  # do not stampede the accept queue
        while counts["open"] + counts["refused"] < count:
            await asyncio.sleep(0.05)
        ready.set()
        cpu_start = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the last messages land
        counts["cpu"] = time.process_time() - cpu_start
        for task in tasks:
            task.cancel()
        results.put((latencies, counts))

    asyncio.run(main())


def _run_fanout(args, *, per_event: bool) -> dict:
    setup_django(args.layer)
    from django.conf import settings

    from market.services import symbols_seed
    from streaming.relay import RelayPipeline
    from streaming.schemas import Trade
    from streaming.topics import TRADES

    symbols = settings.SYMBOLS[: args.symbols]
    symbols_seed(tickers=symbols)
    port = _free_port()
    # As the stack runs it: a connection pool (one connection per WebSocket connect would pass
    # PostgreSQL's max_connections long before 1,000 clients).
    env = {**os.environ, "CHANNEL_LAYER": args.layer, "DJANGO_DEBUG": "0", "DATABASE_POOL_SIZE": "10",
           "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)}
    daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "--access-log", os.devnull, "finstream.asgi:application"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("daphne did not start in 30 s")
            time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}"
        context = multiprocessing.get_context("spawn")
        ready = [context.Event() for _ in range(args.client_procs)]
        stop, results = context.Event(), context.Queue()
        share = args.clients // args.client_procs
        workers = [context.Process(target=_clients_worker,
                                   args=(url, symbols, share, i * share, ready[i], None, stop, results))
                   for i in range(args.client_procs)]
        for worker in workers:
            worker.start()
        for event in ready:
            if not event.wait(120):
                raise SystemExit("clients did not connect in 120 s")
        rss_start = _rss_mib(daphne.pid)
        daphne_cpu = _cpu_seconds(daphne.pid)
        relay = RelayPipeline(per_event=per_event)
        per_batch = max(1, round(args.rate * args.batch_ms / 1000))
        sent, seq, start = 0, 0, time.monotonic()
        next_batch = start
        rss_samples = []
        while time.monotonic() - start < args.duration:
            now = datetime.now(UTC)
            trades = []
            for _ in range(per_batch):
                seq += 1
                symbol = symbols[seq % len(symbols)]
                trades.append(Trade(id=f"b{seq}", symbol=symbol, ts=now, seq=seq, price=Decimal("100.25"),
                                    size=Decimal(10), side="buy"))
            relay.after_commit({TRADES: trades})
            sent += len(trades)
            if seq % (per_batch * 10) < per_batch:
                rss_samples.append(_rss_mib(daphne.pid))
            next_batch += args.batch_ms / 1000
            delay = next_batch - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elapsed = time.monotonic() - start
        behind = max(0.0, time.monotonic() - next_batch)
        daphne_cpu = _cpu_seconds(daphne.pid) - daphne_cpu
        stop.set()
        latencies, counts = [], {"refused": 0, "messages": 0, "gaps": 0, "dropped": 0, "cpu": 0.0}
        for _ in workers:
            lat, cnt = results.get(timeout=120)
            latencies += lat
            for key in counts:
                counts[key] += cnt[key]
        for worker in workers:
            worker.join(30)
        relay.close()
        latencies.sort()
        expected = sent * (args.clients // len(symbols))
        return {
            "sent": sent, "achieved_rate": sent / elapsed, "behind_s": behind, "expected": expected,
            "messages": counts["messages"], "gaps": counts["gaps"], "dropped": counts["dropped"],
            "refused": counts["refused"],
            "delivered_per_s": counts["messages"] / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
            "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
            "rss_start": rss_start, "rss_end": _rss_mib(daphne.pid),
            "rss_median": statistics.median(rss_samples) if rss_samples else 0.0,
            "daphne_cpu": daphne_cpu / elapsed, "clients_cpu": counts["cpu"] / (elapsed + 1),
        }
    finally:
        daphne.terminate()
        daphne.wait(30)


def bench_fanout(args) -> None:
    print(f"fan-out: {args.clients} clients on /ws/trades/{{symbol}} over {args.symbols} symbols, "
          f"{args.rate} trades/s for {args.duration} s, relay batches every {args.batch_ms} ms, "
          f"layer {args.layer}, {args.client_procs} client process(es)")
    figures = {}
    for mode, per_event in (("batched", False), ("per-event", True)):
        if args.only and args.only != mode:
            continue
        r = _run_fanout(args, per_event=per_event)
        figures[mode] = r
        print(f"  {mode:9s}: relayed {r['sent']} trades at {r['achieved_rate']:.0f}/s (ended {r['behind_s']:.1f} s "
              f"behind schedule); delivered {r['messages']}/{r['expected']} messages, {r['delivered_per_s']:.0f}/s; "
              f"latency p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.0f} ms; "
              f"gaps {r['gaps']}; dropped clients {r['dropped']}; refused at connect {r['refused']}; "
              f"daphne RSS {r['rss_start']:.0f} -> "
              f"{r['rss_end']:.0f} MiB (median {r['rss_median']:.0f}); CPU busy: daphne {r['daphne_cpu']:.0%}, "
              f"clients {r['clients_cpu']:.0%}")
    if len(figures) == 2:
        b, p = figures["batched"], figures["per-event"]
        print(f"  batched / per-event: delivered x{b['delivered_per_s'] / max(p['delivered_per_s'], 1):.2f}, "
              f"p99 latency x{p['p99_ms'] / max(b['p99_ms'], 0.001):.1f} lower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    layers = sub.add_parser("layers", help="group_send throughput of each channels-redis layer")
    layers.add_argument("--events", type=int, default=20000)
    layers.add_argument("--batch", type=int, default=200, help="events per group_send when batched")
    layers.add_argument("--groups", type=int, default=10)
    layers.add_argument("--members", type=int, default=1, help="channels in each group")
    fanout = sub.add_parser("fanout", help="relay -> daphne -> N websocket clients")
    fanout.add_argument("--clients", type=int, default=1000)
    fanout.add_argument("--symbols", type=int, default=10)
    fanout.add_argument("--rate", type=int, default=1000, help="trades per second handed to the relay")
    fanout.add_argument("--duration", type=float, default=20)
    fanout.add_argument("--batch-ms", type=int, default=100, help="relay batch period (the runner's batch wait)")
    fanout.add_argument("--layer", choices=("pubsub", "redis"), default="pubsub")
    fanout.add_argument("--client-procs", type=int, default=1)
    fanout.add_argument("--only", choices=("batched", "per-event"))
    args = parser.parse_args()
    {"layers": bench_layers, "fanout": bench_fanout}[args.part](args)


if __name__ == "__main__":
    main()

"""Dashboard latency under load: 50 sites x 30 days of 5-minute readings (432,000, the
gateway's default interval) with a forecast and a plan per site in PostgreSQL, the real app
under uvicorn on 127.0.0.1, and 20 concurrent clients sending 2,000 requests spread over
every route of the app (pages, static files, the API docs, /api/..., /metrics). Target:
p99 < 250 ms and no errors.

The clients are threads of this process, each with one keep-alive connection through the
standard library's ``http.client``: a lean client, so the two share the machine with as little
client work as possible; the figures printed include how much CPU the clients and the server
each used.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/bench_dashboard.py \\
        [--sites 50] [--days 30] [--requests 2000] [--clients 20]

Creates and drops its own database on that server. Requests carry a bearer token, so the
token check is part of what is measured.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._database import throwaway_database  # noqa: E402
from benchmarks._machine import describe  # noqa: E402
from benchmarks.dashboard_data import simulated, store_forecasts_and_plans  # noqa: E402
from cloud.dashboard.app import STATIC_DIR, SWAGGER_PREFIX, create_app  # noqa: E402
from cloud.store.postgres import PostgresCloudStore  # noqa: E402
from der_core import der_data as dd  # noqa: E402
from der_core.config import SimulatorConfig, site_record  # noqa: E402
from der_core.sites import site_configs  # noqa: E402

TOKEN = "bench-token"
START = pd.Timestamp("2024-06-01", tz="UTC")


def fill(url: str, sites: int, days: int) -> list[str]:
    """Sites, readings (bulk COPY), one forecast and one plan per site, a few pipeline runs."""
    configs = site_configs(SimulatorConfig(device_id="home"), sites)
    history = simulated(configs, str(START.date()), str((START + pd.Timedelta(days=days)).date()))
    with PostgresCloudStore(url) as store:
        store.upsert_sites([site_record(c) for c in configs])
        store.upsert_readings(history)
        store_forecasts_and_plans(store, configs, history, history[dd.TS].max() + pd.Timedelta(minutes=5))
        for job in ("cloud_sync", "feature_engineering", "forecasting", "optimizer"):
            store.finish_run(store.start_run(job), "ok", len(history))
    print(f"loaded {len(history):,} readings for {sites} sites x {days} days")
    return [c.device_id for c in configs]


#: The event id the event routes are read with: none is stored, so the answer is 404.
UNKNOWN_EVENT = "no-such-event"


def _walk(routes):
    for route in routes:
        included = getattr(route, "original_router", None)  # an APIRouter the app includes
        yield from _walk(included.routes) if included is not None else (route,)


def routes(devices: list[str]) -> list[tuple[str, callable]]:
    """Every route of the app (read from its router) with a way to fill its parameters."""
    rng = np.random.default_rng(7)
    out = []
    for route in _walk(create_app(PostgresCloudStore("postgresql://unused@127.0.0.1/unused", init=False)).routes):
        path = getattr(route, "path", "")
        if "GET" not in (getattr(route, "methods", None) or {"GET"}):  # a POST or DELETE: not a page to read
            continue
        if path == "/static":
            for file in sorted(p for p in STATIC_DIR.rglob("*") if p.is_file()):
                out.append((f"/static/{file.relative_to(STATIC_DIR)}", lambda p=file: f"/static/{p.relative_to(STATIC_DIR)}"))
        elif path == SWAGGER_PREFIX:  # a folder of files, not a page: the two /docs loads
            for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
                out.append((f"{path}/{name}", lambda p=f"{path}/{name}": p))
        elif "{event_id}" in path:  # the benchmark announces no event: an unknown one is answered 404
            out.append((path, lambda p=path: p.replace("{event_id}", UNKNOWN_EVENT)))
        elif "{device_id}" in path:
            out.append((path, lambda p=path: p.replace("{device_id}", devices[rng.integers(len(devices))])))
            if path.endswith("/readings"):
                out.append((path + "?hours=168", lambda p=path: p.replace("{device_id}", devices[rng.integers(len(devices))])
                            + "?hours=168"))
        elif path:
            out.append((path, lambda p=path: p))
    return out


def load(port: int, plan: list[tuple[str, str]], clients: int) -> list[tuple[str, float, int]]:
    """Send ``plan`` from ``clients`` threads, each over one keep-alive connection; per request
    (route, seconds, status), status 0 for a failed connection."""
    pending = iter(plan)
    taking = threading.Lock()
    results: list[tuple[str, float, int]] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with taking:
                item = next(pending, None)
            if item is None:
                break
            name, path = item
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                status = 0
            results.append((name, time.perf_counter() - started, status))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "DASHBOARD_TOKEN": TOKEN}
    for name in ("SUPABASE_URL", "SUPABASE_KEY"):
        env.pop(name, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "cloud.dashboard.app:app_from_env", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=Path(__file__).resolve().parents[1], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the dashboard did not start within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    with throwaway_database() as url:
        devices = fill(url, args.sites, args.days)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # what autovacuum does to a table after a bulk load
        table = routes(devices)
        plan = [(table[i % len(table)][0], table[i % len(table)][1]()) for i in range(args.requests)]
        np.random.default_rng(11).shuffle(plan)
        port = free_port()
        server = serve(url, port)
        try:
            load(port, plan[:args.clients], args.clients)  # connect and warm up
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            started = time.perf_counter()
            results = load(port, plan, args.clients)
            elapsed = time.perf_counter() - started
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
        finally:
            server.terminate()
            server.wait(timeout=30)
    latency = np.array([r[1] for r in results]) * 1000
    errors = [r for r in results if r[2] != (404 if UNKNOWN_EVENT in r[0] or "{event_id}" in r[0] else 200)]
    print(f"machine: {describe()}, {platform.system()}")
    print(f"routes ({len(table)}): {', '.join(t[0] for t in table)}")
    print(f"{len(results):,} requests, {args.clients} concurrent clients, {elapsed:.2f} s: {len(results) / elapsed:,.0f} requests/s")
    print(f"clients: {args.clients} threads of the benchmark process, one keep-alive http.client connection each, "
          f"{client_cpu:.1f} CPU-s; server: one uvicorn process, {server_cpu:.1f} CPU-s")
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    print(f"latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {latency.max():.1f} ms")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0][0]} -> {errors[0][2]})" if errors else ""))
    by_route = pd.DataFrame(results, columns=["route", "s", "status"]).groupby("route")["s"]
    slowest = (by_route.quantile(0.99) * 1000).sort_values(ascending=False).head(5)
    print("slowest routes (p99): " + ", ".join(f"{r} {v:.0f} ms" for r, v in slowest.items()))
    print("target: p99 < 250 ms, 0 errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

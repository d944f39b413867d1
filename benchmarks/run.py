"""Throughput and latency of simpleproxy against its references, in one run, on loopback.

    python benchmarks/run.py [--duration 5] [--connections 16 64] [--skip-nginx]

Needs ``wrk`` (``apt-get install wrk``); nginx is measured where installed.
Servers are pinned to CPU 0, wrk and the backend to CPU 1 (``taskset``), the
layout the issue's targets assume. Every target serves the same bodies from
the same asyncio backend (benchmarks/backend.py), except the waitress
hello-world, which answers from memory and is the ceiling of this design:
same server, same settings, no upstream. simpleproxy replaces waitress's
request parser and response-head writer with faster equivalents, so a second
simpleproxy answering 1 KiB from memory (a ``respond`` route) is measured too:
the ceiling of simpleproxy's own front end, against which the proxying alone
is judged. Each measurement runs for a bounded time and only against 127.0.0.1.

Prints a table with ratios to the hello-world ceiling and to werkzeug's
ProxyMiddleware, then the 300 MiB streaming check (the proxy's peak RSS).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
MIB = 1024 * 1024
ANSWERING = "simpleproxy from memory"


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1 else cmd  # type: ignore[operator]


def start(cmd: list[str], cpu: int, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """Start a server that prints its port as its first stdout line."""
    proc = subprocess.Popen(pinned(cpu, cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"{cmd} did not start: {line!r}")
    return proc, int(line)


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate every process started, then wait for each (killing one that lingers)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_SIZE = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(port: int, path: str, connections: int, duration: float) -> dict[str, float]:
    cmd = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", f"http://127.0.0.1:{port}{path}"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    # The latency distribution lines alone: "     50%    2.15ms" (a "69.50%" elsewhere must not match).
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if not rps:
        raise RuntimeError(f"wrk failed:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "mibs": float(transfer.group(1)) * _SIZE[transfer.group(2)] / MIB if transfer else float("nan"),
        "p50": _seconds(p50.group(1)) if p50 else float("nan"),
        "p99": _seconds(p99.group(1)) if p99 else float("nan"),
        "errors": errors.group(0) if errors else "",
    }


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    def mid(values: list) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    return {
        key: (mid([s[key] for s in samples]) if key != "errors" else " ".join(filter(None, {s[key] for s in samples})))
        for key in samples[0]
    }


def _ratio(samples: dict, name: str, reference: str, path: str, conns: int, key: str) -> float:
    """Median of per-round ratios: a noisy minute then moves both sides of a ratio alike."""
    ours, theirs = samples[(name, path, conns)], samples[(reference, path, conns)]
    ratios = sorted(a[key] / b[key] for a, b in zip(ours, theirs, strict=True))
    return ratios[len(ratios) // 2]


def simpleproxy_config(path: Path, backend_port: int, log_path: Path, threads: int) -> None:
    path.write_text(
        f"""listen:
  http: 127.0.0.1:{{port}}
server:
  threads: {threads}
upstreams:
  bench:
    servers:
      - url: http://127.0.0.1:{backend_port}
routes:
  - path: /
    upstream: bench
log:
  access: {log_path}
""".replace("{port}", str(free_port()))
    )


def answering_config(path: Path, threads: int) -> None:
    """simpleproxy answering 1 KiB from memory (a ``respond`` route): its own front end's ceiling."""
    path.write_text(
        f"""listen:
  http: 127.0.0.1:{free_port()}
server:
  threads: {threads}
routes:
  - path: /
    respond: {{status: 200, body: "{'x' * 1024}", content_type: application/octet-stream}}
log:
  access: off
"""
    )


def start_simpleproxy(config: Path) -> tuple[subprocess.Popen, int]:
    port = int(re.search(r"127\.0\.0\.1:(\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        pinned(0, [PY, "-m", "simpleproxy", "run", "--config", str(config)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    wait_port(port)
    return proc, port


def start_nginx(
    workdir: Path, backend_port: int, *, http: str = "", server: str = "", location: str = ""
) -> tuple[subprocess.Popen, int] | None:
    """nginx (one worker) proxying to the backend on a free port; the extra directives go into the
    http, server and location blocks. None when nginx is not installed."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        return None
    port = free_port()
    home = workdir / "nginx"
    home.mkdir(exist_ok=True)
    conf = home / "nginx.conf"
    # As root (a container) workers would switch to nobody and could not write their temp files.
    user = "user root;\n" if getattr(os, "geteuid", lambda: 1)() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log {home}/access.log;
  client_body_temp_path {home}/body; proxy_temp_path {home}/proxy;
  fastcgi_temp_path {home}/f; uwsgi_temp_path {home}/u; scgi_temp_path {home}/s;
  {http}
  upstream bench {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    {server}
    location / {{ proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection ""; {location} }}
  }}
}}
"""
    )
    proc = subprocess.Popen(pinned(0, [nginx, "-c", str(conf), "-p", str(home)]), stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return float("nan")
    m = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def stream_once(port: int, path: str) -> tuple[int, float]:
    """GET path, read and drop the body; -> (bytes, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        total = 0
        while data := sock.recv(1024 * 1024):
            total += len(data)
    return total, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    parser.add_argument(
        "--threads", type=int, default=8,
        help="waitress threads for every waitress-served target (default 8: measured best on 2 cores "
        "with this fast backend; simpleproxy's own default is 16, for slower backends)",
    )
    parser.add_argument("--skip-nginx", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen] = []
    workdir = Path(tempfile.mkdtemp(prefix="simpleproxy-bench-"))
    try:
        backend, backend_port = start([PY, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        targets: dict[str, int] = {"backend direct": backend_port}
        hello, targets["waitress hello-world"] = start([PY, str(HERE / "refs.py"), "hello", str(args.threads)], cpu=0, env=env)
        werk, targets["werkzeug ProxyMiddleware"] = start(
            [PY, str(HERE / "refs.py"), "werkzeug", str(args.threads), f"http://127.0.0.1:{backend_port}"], cpu=0, env=env
        )
        procs += [hello, werk]
        config = workdir / "simpleproxy.yaml"
        simpleproxy_config(config, backend_port, workdir / "access.log", args.threads)
        sp, targets["simpleproxy"] = start_simpleproxy(config)
        procs.append(sp)
        answering = workdir / "answering.yaml"
        answering_config(answering, args.threads)
        own, targets[ANSWERING] = start_simpleproxy(answering)
        procs.append(own)
        if not args.skip_nginx and (ng := start_nginx(workdir, backend_port)):
            procs.append(ng[0])
            targets["nginx proxy"] = ng[1]

        # Servers share CPU 0, so each is measured alone while the others idle. Rounds
        # interleave the targets so that a noisy neighbour hits all of them alike.
        runs = [("/bench/1k", c) for c in args.connections] + [("/bench/10m", 16)]
        samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        def measured(path: str) -> dict[str, int]:  # the answering row serves 1 KiB only
            return {name: port for name, port in targets.items() if name != ANSWERING or path == "/bench/1k"}

        for path, conns in runs:
            for port in measured(path).values():
                wrk(port, path, conns, 1.0)  # warm-up: pools, caches
        for _ in range(args.rounds):
            for path, conns in runs:
                for name, port in measured(path).items():
                    samples.setdefault((name, path, conns), []).append(wrk(port, path, conns, args.duration))
        results = {key: _median(runs_) for key, runs_ in samples.items()}

        print(
            f"\nsimpleproxy benchmark: medians of {args.rounds} rounds of {args.duration:g}s, loopback, "
            f"servers on CPU 0 ({args.threads} waitress threads each), wrk+backend on CPU 1"
        )
        print("ratios: the median over rounds of each round's own ratio (targets measured back to back)")
        for path, conns in runs:
            unit = "MiB/s" if path.endswith("10m") else "req/s"
            key = "mibs" if path.endswith("10m") else "rps"
            print(f"\nGET {path}, {conns} connections, keep-alive")
            print(f"  {'target':26} {unit:>10} {'range':>17} {'p50 ms':>8} {'p99 ms':>8} {'/ceiling':>9} {'/werkzeug':>10}")
            for name in measured(path):
                r = results[(name, path, conns)]
                values = [s[key] for s in samples[(name, path, conns)]]
                spread = f"{min(values):.0f}-{max(values):.0f}"
                print(
                    f"  {name:26} {r[key]:10.1f} {spread:>17} {r['p50'] * 1e3:8.2f} {r['p99'] * 1e3:8.2f} "
                    f"{_ratio(samples, name, 'waitress hello-world', path, conns, key):9.2f} "
                    f"{_ratio(samples, name, 'werkzeug ProxyMiddleware', path, conns, key):10.2f} {r['errors']}"
                )

        print(f"\n'{ANSWERING}': simpleproxy's own front end (its parser and response writer) answering"
              "\nfrom memory, as the hello-world does on stock waitress; simpleproxy / it = the proxy's share.")
        for path, conns in runs[:-1]:
            share = _ratio(samples, "simpleproxy", ANSWERING, path, conns, "rps")
            print(f"  {conns} connections: simpleproxy at {share:.2f} of it")

        total, seconds = stream_once(targets["simpleproxy"], "/bench/300m")
        print(
            f"\n300 MiB through simpleproxy: {total / MIB:.0f} MiB received in {seconds:.2f}s "
            f"({total / MIB / seconds:.0f} MiB/s); proxy peak RSS {peak_rss_mib(sp.pid):.1f} MiB"
        )
    finally:
        stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

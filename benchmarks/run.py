"""Throughput and latency of simpleproxy against its references, in one run, on loopback.

    python benchmarks/run.py [--duration 4] [--connections 8 32] [--pin] [--compare REV] [--skip-nginx]
    python benchmarks/run.py --delay 50 [--connections 200] [--threads 16 64 256]

Needs ``wrk`` (``apt-get install wrk``); nginx is measured where installed.
Nothing is pinned by default: every server runs as a user runs it, so
simpleproxy binds itself to one CPU (``server.cpu_affinity: auto``) and the
references float. ``simpleproxy, taskset`` is the same proxy started under
``taskset -c 0``, its pinned throughput in the same run. ``--pin`` puts every
server on CPU 0 and wrk and the backend on CPU 1, the layout older figures
used, for resolving small differences. Every target serves the same bodies
from the same asyncio backend (benchmarks/backend.py), except the waitress
hello-world, which answers from memory and is the ceiling of this design:
same server, same settings, no upstream. simpleproxy replaces waitress's
request parser and response-head writer with faster equivalents, so a second
simpleproxy answering 1 KiB from memory (a ``respond`` route) is measured too:
the ceiling of simpleproxy's own front end, against which the proxying alone
is judged. Each measurement runs for a bounded time and only against 127.0.0.1.

Prints a table with ratios to the hello-world ceiling, to werkzeug's
ProxyMiddleware and to simpleproxy's own pinned figure; where each of the
proxy's threads spends its CPU under load (the waitress loop thread's share,
CPU per request, and ``futex`` calls per request where ``perf`` can count
them); then the 300 MiB streaming check (the proxy's peak RSS). ``--compare
REV`` measures a git revision of simpleproxy beside the working tree.

``--delay MS`` measures instead a backend that answers after MS milliseconds,
through simpleproxy at each ``--threads`` count: throughput against the
thread bound (threads / latency), p99 and peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
MIB = 1024 * 1024
ANSWERING = "simpleproxy from memory"


#: --pin: servers on CPU 0, load generators and backends on CPU 1 (off: as users run them)
PIN = False


def add_pin_option(parser: argparse.ArgumentParser) -> None:
    """The --pin option every benchmark script shares."""
    parser.add_argument(
        "--pin", action="store_true",
        help="pin servers to CPU 0 and wrk and backends to CPU 1 (default: nothing pinned, as users run it)",
    )


def wrk_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a script that measures with wrk against nginx: --duration, --rounds,
    --connections, --skip-nginx, --pin."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-nginx", action="store_true")
    add_pin_option(parser)
    return parser


def ready_for_wrk(args: argparse.Namespace) -> bool:
    """False (said why) without wrk; else pinning set as asked."""
    if not shutil.which("wrk"):
        print("needs wrk (apt-get install wrk)")
        return False
    use_pinning(args.pin)
    return True


def use_pinning(on: bool) -> None:
    global PIN
    PIN = on


def taskset(cpu: int, cmd: list[str]) -> list[str]:
    """``cmd`` under ``taskset -c cpu``, where there is a second CPU to keep free."""
    return ["taskset", "-c", str(cpu), *cmd] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else cmd


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    """``cmd`` on ``cpu`` with --pin, else as it is."""
    return taskset(cpu, cmd) if PIN else cmd


def pinning_note() -> str:
    return "servers on CPU 0, wrk and backend on CPU 1 (--pin)" if PIN else "nothing pinned (simpleproxy binds itself to one CPU)"


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


@contextlib.contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, list[subprocess.Popen]]]:
    """A scratch directory and a list for the processes a benchmark starts: at the end, however it
    ends, every process is stopped and the directory removed."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    procs: list[subprocess.Popen] = []
    try:
        yield workdir, procs
    finally:
        stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)


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


def wrk(
    port: int, path: str, connections: int, duration: float, headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> dict[str, float]:
    """One wrk run; ``script``: a Lua file shaping each request (wrk -s)."""
    fields = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    if script is not None:
        fields += ["-s", str(script)]
    cmd = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", *fields,
                     f"http://127.0.0.1:{port}{path}"])
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


def simpleproxy_config(path: Path, backend_port: int, log_path: Path | str, threads: int) -> None:
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


def start_simpleproxy(config: Path, source: Path = ROOT, on_cpu: int | None = None) -> tuple[subprocess.Popen, int]:
    """``simpleproxy run`` from ``source`` (a checkout), on CPU 0 with --pin or on ``on_cpu`` if given."""
    port = int(re.search(r"127\.0\.0\.1:(\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    env = dict(os.environ, PYTHONPATH=str(source))
    cmd = [PY, "-m", "simpleproxy", "run", "--config", str(config)]
    proc = subprocess.Popen(
        taskset(on_cpu, cmd) if on_cpu is not None else pinned(0, cmd),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir(),
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


def thread_cpu(pid: int) -> dict[int, float]:
    """Seconds of CPU each thread of ``pid`` has used (Linux /proc; nanoseconds from schedstat where kept)."""
    times = {}
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            try:
                fields = (task / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            times[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return times


def _perf_counts(pid: int, seconds: float) -> subprocess.Popen | None:
    """``perf stat`` counting futex and poll calls of ``pid`` for ``seconds``; None without perf."""
    if not shutil.which("perf"):
        return None
    events = "syscalls:sys_enter_futex,syscalls:sys_enter_poll,context-switches"
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "--", "sleep", f"{seconds:g}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def thread_profile(pid: int, port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    """Where the proxy's CPU goes while wrk loads it: the loop thread (the main thread of
    ``simpleproxy run``) and the rest, per request and as a share of a CPU; system calls per
    request where perf can count them."""
    before = thread_cpu(pid)
    perf = _perf_counts(pid, duration)
    started = time.perf_counter()
    result = wrk(port, path, connections, duration)
    elapsed = time.perf_counter() - started
    after = thread_cpu(pid)
    requests = result["rps"] * elapsed
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    total = sum(after.values()) - sum(before.values())
    profile: dict[str, Any] = {
        "rps": result["rps"], "loop_share": loop / elapsed, "total_share": total / elapsed,
        "loop_us": loop / requests * 1e6, "total_us": total / requests * 1e6,
    }
    if perf is not None:
        _, err = perf.communicate(timeout=duration + 30)
        for line in err.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].strip().isdigit():
                name = fields[2].rpartition(":sys_enter_")[2] or fields[2]
                profile[name] = int(fields[0]) / requests
    return profile


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


def _table(samples: dict, runs: list[tuple[str, int]], names: list[str], references: dict[str, str]) -> None:
    """One block per run; a column per reference (target name -> column title), each the median round ratio."""
    for path, conns in runs:
        unit = "MiB/s" if path.endswith("10m") else "req/s"
        key = "mibs" if path.endswith("10m") else "rps"
        print(f"\nGET {path}, {conns} connections, keep-alive")
        print(f"  {'target':30} {unit:>9} {'range':>13} {'p50 ms':>7} {'p99 ms':>8}" + "".join(f" {'/' + r:>10}" for r in references.values()))
        for name in names:
            if (name, path, conns) not in samples:
                continue
            values = [s[key] for s in samples[(name, path, conns)]]
            r = _median(samples[(name, path, conns)])
            ratios = "".join(
                f" {_ratio(samples, name, ref, path, conns, key):10.2f}" if (ref, path, conns) in samples else f" {'-':>10}"
                for ref in references
            )
            print(f"  {name:30} {r[key]:9.0f} {f'{min(values):.0f}-{max(values):.0f}':>13} {r['p50'] * 1e3:7.2f} "
                  f"{r['p99'] * 1e3:8.2f}{ratios} {r['errors']}")


def _measure(targets: dict[str, int], runs: list[tuple[str, int]], rounds: int, duration: float,
             serves: Any = lambda name, path: True) -> dict:
    """Every target on every run, rounds interleaved so that a noisy neighbour hits all alike."""
    for path, conns in runs:
        for name, port in targets.items():
            if serves(name, path):
                wrk(port, path, conns, 1.0)  # warm-up: pools, caches, threads
    samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for path, conns in runs:
            for name, port in targets.items():
                if serves(name, path):
                    samples.setdefault((name, path, conns), []).append(wrk(port, path, conns, duration))
    return samples


def _worktree(rev: str, workdir: Path) -> Path:
    tree = workdir / "compare"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    return tree


def _print_profiles(profiles: dict[str, dict[str, Any]], conns: int) -> None:
    print(f"\nWhere the proxy's CPU goes, {conns} connections, 1 KiB GETs (loop: waitress's loop thread)")
    print(f"  {'target':30} {'req/s':>7} {'loop %CPU':>10} {'all %CPU':>9} {'loop us/req':>12} {'all us/req':>11}"
          f" {'futex/req':>10} {'poll/req':>9} {'cswch/req':>10}")
    for name, p in profiles.items():
        extra = "".join(f" {p[k]:{w}.1f}" if k in p else f" {'-':>{w}}" for k, w in
                        (("futex", 10), ("poll", 9), ("context-switches", 10)))
        print(f"  {name:30} {p['rps']:7.0f} {p['loop_share'] * 100:10.0f} {p['total_share'] * 100:9.0f} "
              f"{p['loop_us']:12.1f} {p['total_us']:11.1f}{extra}")


def fast_backend(args: argparse.Namespace, workdir: Path, procs: list[subprocess.Popen]) -> None:
    backend, backend_port = start([PY, str(HERE / "backend.py")], cpu=1)
    procs.append(backend)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    threads = args.threads[0]
    targets: dict[str, int] = {"backend direct": backend_port}
    hello, targets["waitress hello-world"] = start([PY, str(HERE / "refs.py"), "hello", str(threads)], cpu=0, env=env)
    werk, targets["werkzeug ProxyMiddleware"] = start(
        [PY, str(HERE / "refs.py"), "werkzeug", str(threads), f"http://127.0.0.1:{backend_port}"], cpu=0, env=env
    )
    procs += [hello, werk]
    pids = {}
    config = workdir / "simpleproxy.yaml"
    simpleproxy_config(config, backend_port, "off" if args.no_log else workdir / "access.log", threads)
    sp, targets["simpleproxy"] = start_simpleproxy(config)
    procs.append(sp)
    pids["simpleproxy"] = sp.pid
    if not PIN:
        pinned_config = workdir / "pinned.yaml"
        simpleproxy_config(pinned_config, backend_port, "off" if args.no_log else workdir / "pinned.log", threads)
        sp_pinned, targets["simpleproxy, taskset"] = start_simpleproxy(pinned_config, on_cpu=0)
        procs.append(sp_pinned)
        pids["simpleproxy, taskset"] = sp_pinned.pid
    if args.compare:
        old_config = workdir / "compare.yaml"
        simpleproxy_config(old_config, backend_port, "off" if args.no_log else workdir / "compare.log", threads)
        old, targets[f"simpleproxy {args.compare}"] = start_simpleproxy(old_config, source=_worktree(args.compare, workdir))
        procs.append(old)
        pids[f"simpleproxy {args.compare}"] = old.pid
    for more in args.threads[1:]:  # the same proxy with other thread counts
        more_config = workdir / f"threads{more}.yaml"
        simpleproxy_config(more_config, backend_port, "off" if args.no_log else workdir / f"threads{more}.log", more)
        proc, targets[f"simpleproxy, {more} threads"] = start_simpleproxy(more_config)
        procs.append(proc)
    answering = workdir / "answering.yaml"
    answering_config(answering, threads)
    own, targets[ANSWERING] = start_simpleproxy(answering)
    procs.append(own)
    if not args.skip_nginx and (ng := start_nginx(workdir, backend_port)):
        procs.append(ng[0])
        targets["nginx proxy"] = ng[1]

    runs = [("/bench/1k", c) for c in args.connections] + [("/bench/10m", 16)]
    samples = _measure(targets, runs, args.rounds, args.duration,
                       lambda name, path: name != ANSWERING or path == "/bench/1k")  # it serves 1 KiB only
    print(
        f"\nsimpleproxy benchmark: medians of {args.rounds} rounds of {args.duration:g}s, loopback, "
        f"{pinning_note()}, {threads} waitress threads each, access log {'off' if args.no_log else 'to a file'}"
    )
    print("ratios: the median over rounds of each round's own ratio (targets measured back to back)")
    references = {"waitress hello-world": "hello", "werkzeug ProxyMiddleware": "werkzeug"}
    if not PIN:
        references["simpleproxy, taskset"] = "pinned"
    _table(samples, runs, list(targets), references)

    print(f"\n'{ANSWERING}': simpleproxy's own front end (its parser and response writer) answering"
          "\nfrom memory, as the hello-world does on stock waitress; simpleproxy / it = the proxy's share.")
    for path, conns in runs[:-1]:
        share = _ratio(samples, "simpleproxy", ANSWERING, path, conns, "rps")
        print(f"  {conns} connections: simpleproxy at {share:.2f} of it")

    if Path(f"/proc/{sp.pid}/task").is_dir():
        for conns in args.connections:
            _print_profiles({name: thread_profile(pid, targets[name], "/bench/1k", conns, args.duration)
                             for name, pid in pids.items()}, conns)

    total, seconds = stream_once(targets["simpleproxy"], "/bench/300m")
    print(
        f"\n300 MiB through simpleproxy: {total / MIB:.0f} MiB received in {seconds:.2f}s "
        f"({total / MIB / seconds:.0f} MiB/s); proxy peak RSS {peak_rss_mib(sp.pid):.1f} MiB"
    )


def slow_backend(args: argparse.Namespace, workdir: Path, procs: list[subprocess.Popen]) -> None:
    """simpleproxy at each thread count in front of a backend that takes ``--delay`` ms."""
    backend, backend_port = start([PY, str(HERE / "backend.py")], cpu=1)
    procs.append(backend)
    targets: dict[str, int] = {}
    pids: dict[str, int] = {}
    for threads in args.threads:
        config = workdir / f"threads{threads}.yaml"
        simpleproxy_config(config, backend_port, "off" if args.no_log else workdir / f"threads{threads}.log", threads)
        proc, targets[f"simpleproxy, {threads} threads"] = start_simpleproxy(config)
        procs.append(proc)
        pids[f"simpleproxy, {threads} threads"] = proc.pid
    path = f"/bench/{args.delay}ms"
    runs = [(path, c) for c in args.connections]
    samples = _measure(targets, runs, args.rounds, args.duration)
    print(f"\nA backend answering in {args.delay} ms: medians of {args.rounds} rounds of {args.duration:g}s, "
          f"{pinning_note()}")
    for _, conns in runs:
        print(f"\nGET {path}, {conns} connections, keep-alive")
        print(f"  {'target':30} {'req/s':>8} {'bound':>7} {'/bound':>7} {'p50 ms':>7} {'p99 ms':>8} {'peak RSS MiB':>13}")
        for name, threads in zip(targets, args.threads):
            r = _median(samples[(name, path, conns)])
            bound = min(threads, conns) * 1000 / args.delay
            print(f"  {name:30} {r['rps']:8.0f} {bound:7.0f} {r['rps'] / bound:7.2f} {r['p50'] * 1e3:7.1f} "
                  f"{r['p99'] * 1e3:8.1f} {peak_rss_mib(pids[name]):13.1f} {r['errors']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--connections", type=int, nargs="+", help="default: 8 32; with --delay, 200")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    parser.add_argument(
        "--threads", type=int, nargs="+",
        help="waitress threads (default 8 for every waitress-served target; more numbers add simpleproxy "
        "at those counts; with --delay, simpleproxy at 16 64 256)",
    )
    parser.add_argument("--delay", type=int, metavar="MS", help="measure a backend answering in MS milliseconds instead")
    parser.add_argument("--compare", metavar="REV", help="also measure simpleproxy at this git revision")
    parser.add_argument("--no-log", action="store_true", help="simpleproxy's access log off (default: to a file)")
    parser.add_argument("--skip-nginx", action="store_true")
    add_pin_option(parser)
    args = parser.parse_args()
    use_pinning(args.pin)
    args.connections = args.connections or ([200] if args.delay else [8, 32])
    args.threads = args.threads or ([16, 64, 256] if args.delay else [8])
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []
    workdir = Path(tempfile.mkdtemp(prefix="simpleproxy-bench-"))
    try:
        (slow_backend if args.delay else fast_backend)(args, workdir, procs)
    finally:
        stop_all(procs)
        if (workdir / "compare").exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(workdir / "compare")],
                           capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

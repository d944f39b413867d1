"""TLS figures on loopback, bounded in time: simpleproxy's HTTPS front against plain HTTP and nginx.

    python benchmarks/tls.py [--duration 4] [--rounds 3] [--skip-nginx]

For simpleproxy (HTTPS and plain HTTP on the same proxy, the same route) and
nginx terminating TLS in front of the same asyncio backend:
1. new TLS connections per second: wrk sending ``Connection: close``, so every
   request is a new TCP connection and a full handshake (ECDSA P-256
   certificate from trustme, TLS 1.3);
2. keep-alive 1 KiB GETs per second over TLS, as a ratio to plain HTTP
   through the same proxy;
and, for the README's design note, plain HTTP through a byte-for-byte relay
(benchmarks/relay.py) in front of the same proxy: the least a relay design,
one that decrypts and then forwards plaintext to waitress over a socket, would add.
3. CPU per new connection (``--cpu-seconds``, 0 skips it): ``openssl s_time`` opens
   connections one after another, each sending one GET of 1 KiB, full handshakes
   (``-new``) and resumed ones (``-reuse``), TLS 1.3 and 1.2, with an ECDSA P-256 and
   an RSA 2048 certificate; the server's CPU (all its threads, from /proc) divided by
   the connections made, beside nginx's worker with the same certificate and beside
   the floor of any Python server on the ``ssl`` module (benchmarks/ssl_floor.py: one
   thread answering from memory), and how many reconnections resumed. Plain HTTP
   connections (one request each) are measured the same way, as the floor under every
   TLS figure, for the waitress hello-world too; the "design floor" of each TLS row is
   the hello-world's plain connection plus what TLS adds to the ssl floor's: the least a
   server on waitress, a thread per request, can pay for that connection.
Nothing pinned (simpleproxy binds itself to one CPU); ``--pin`` puts the servers on
CPU 0 and wrk and the backend on CPU 1, as benchmarks/run.py does. Needs
wrk (built with OpenSSL, as Debian's is) and trustme (``pip install .[test]``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)


def _wrk(port: int, scheme: str, connections: int, duration: float, close: bool) -> dict[str, float]:
    """benchmarks/run.py's wrk, for https and with Connection: close when asked."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"{scheme}://127.0.0.1:{port}/bench/1k")
    out = subprocess.run(bench.pinned(1, cmd), capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)", out)
    if not rps:
        raise RuntimeError(f"wrk failed:\n{out}")
    return {"rps": float(rps.group(1)), "errors": errors.group(0) if errors else ""}


def start_https_proxy(workdir: Path, name: str, cert: Path, key: Path, threads: int,
                      backend_port: int) -> tuple[subprocess.Popen, int, int]:
    """simpleproxy with plain HTTP and HTTPS listeners in front of the backend -> (process, http, https port)."""
    http_port, https_port = bench.free_port(), bench.free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"listen:\n  http: 127.0.0.1:{http_port}\n  https:\n    address: 127.0.0.1:{https_port}\n"
        f"    certificates: [{{cert: '{cert}', key: '{key}'}}]\n"
        f"server: {{threads: {threads}}}\n"
        f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\n"
        f"routes: [{{upstream: app}}]\nlog: {{access: '{workdir / 'access.log'}'}}\n"
    )
    proc, _ = bench.start_simpleproxy(config)
    bench.wait_port(https_port)
    return proc, http_port, https_port


def _cpu_seconds(pid: int) -> float:
    return sum(bench.thread_cpu(pid).values())


def _nginx_worker(master: subprocess.Popen) -> int:
    """nginx's one worker process: the child of the master (the master itself handles no traffic)."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children")
    for _ in range(100):
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    return master.pid


def _s_time(port: int, version: str | None, reuse: bool, seconds: float) -> tuple[int, int]:
    """``openssl s_time``: connections made one after another and how many of them resumed.

    Every connection sends one HTTP/1.0 GET and reads the answer to its end; with
    ``-reuse`` each offers the session of the first, printing ``r`` for a resumed one
    and ``*`` for a full handshake. ``version`` None means plain TCP: the same GET
    over a new connection, counted by a loop of our own."""
    if version is None:
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /bench/1k HTTP/1.0\r\n\r\n")
                while sock.recv(65536):
                    pass
            count += 1
        return count, 0
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-www", "/bench/1k", "-time", str(max(1, round(seconds))),
           "-reuse" if reuse else "-new", f"-tls{version.replace('.', '_')}"]
    out = subprocess.run(bench.pinned(1, cmd), capture_output=True, text=True, timeout=seconds + 30).stdout
    made = re.search(r"(\d+) connections in [\d.]+s", out)
    if not made:
        raise RuntimeError(f"openssl s_time failed:\n{out[-2000:]}")
    marks = "".join(line for line in out.splitlines() if set(line) <= {"r", "*"})
    return int(made.group(1)), marks.count("r")


def handshake_cpu(args: argparse.Namespace, workdir: Path, backend_port: int) -> None:
    """Section 3: CPU per new connection, simpleproxy beside nginx, per key type and handshake kind."""
    import trustme

    kinds = [("TLS 1.3 full", "1.3", False), ("TLS 1.3 resumed", "1.3", True),
             ("TLS 1.2 full", "1.2", False), ("TLS 1.2 resumed", "1.2", True)]
    rows: dict[tuple[str, str], dict[str, tuple[float, int, int]]] = {}
    for key_name, key_type in (("ECDSA P-256", trustme.KeyType.ECDSA), ("RSA 2048", trustme.KeyType.RSA)):
        ca = trustme.CA(key_type=key_type)
        leaf = ca.issue_cert("bench.example", "127.0.0.1", key_type=key_type)
        cert, key = workdir / f"{key_type.name}.pem", workdir / f"{key_type.name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        servers: dict[str, tuple[subprocess.Popen, int, int | None, int]] = {}  # name -> (proc, cpu pid, https, http)
        procs: list[subprocess.Popen] = []
        try:
            proc, http_port, https_port = start_https_proxy(workdir, f"cpu-{key_type.name}", cert, key, args.threads,
                                                            backend_port)
            procs.append(proc)
            servers["simpleproxy"] = (proc, proc.pid, https_port, http_port)
            floor, floor_https = bench.start([sys.executable, str(HERE / "ssl_floor.py"), str(cert), str(key)], cpu=0)
            procs.append(floor)
            servers["python ssl floor"] = (floor, floor.pid, floor_https, int(floor.stdout.readline()))  # type: ignore[union-attr]
            hello_cmd = [sys.executable, str(HERE / "refs.py"), "hello", str(args.threads)]
            if not bench.PIN:  # bound to one CPU, as simpleproxy binds itself (cpu_affinity: auto, the last CPU)
                hello_cmd = bench.taskset((os.cpu_count() or 1) - 1, hello_cmd)
            hello, hello_port = bench.start(hello_cmd, cpu=0, env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
            procs.append(hello)
            servers["waitress hello-world"] = (hello, hello.pid, None, hello_port)  # plain HTTP only
            if not args.skip_nginx:
                ng_https = bench.free_port()
                ng = bench.start_nginx(workdir, backend_port,
                                       server=f"listen 127.0.0.1:{ng_https} ssl; ssl_certificate {cert}; "
                                              f"ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;")
                if ng is not None:
                    procs.append(ng[0])
                    bench.wait_port(ng_https)
                    servers["nginx"] = (ng[0], _nginx_worker(ng[0]), ng_https, ng[1])
            for name, (_, pid, https, http) in servers.items():
                _s_time(http, None, False, 1)  # warm up: imports, pools, the backend connection
                if https is not None:
                    _s_time(https, "1.3", False, 1)
            samples: dict[tuple[str, str, str], list[tuple[float, int, int]]] = {}
            for _ in range(args.rounds):  # the servers in turn, so that drift in the machine hits both
                for label, version, reuse in kinds + [("plain HTTP", None, False)]:
                    for name, (_, pid, https, http) in servers.items():
                        port = http if version is None else https
                        if port is None:
                            continue  # plain HTTP only (the hello-world)
                        before = _cpu_seconds(pid)
                        made, resumed = _s_time(port, version, reuse, args.cpu_seconds)
                        used = _cpu_seconds(pid) - before
                        samples.setdefault((key_name, label, name), []).append(
                            (used / max(made, 1) * 1e6, made, resumed))
            for (row, label, name), values in samples.items():
                rows.setdefault((row, label), {})[name] = sorted(values)[len(values) // 2]
            plain = rows[(key_name, "plain HTTP")]  # measured in the same rounds
            for label, _, _ in kinds:  # the design's floor: waitress's own connection plus what ssl adds
                by_server = rows[(key_name, label)]
                tls_share = by_server["python ssl floor"][0] - plain["python ssl floor"][0]
                by_server["design floor"] = (plain["waitress hello-world"][0] + tls_share, 0, 0)
        finally:
            bench.stop_all(procs)
    print(f"\nCPU per new connection (one 1 KiB GET each), us of server CPU, medians of {args.rounds} runs of "
          f"openssl s_time for {args.cpu_seconds:g}s each, {bench.pinning_note()}")
    for (key_name, label), by_server in rows.items():
        ours = by_server.get("simpleproxy")
        line = f"  {key_name:12} {label:16}"
        for name, (us, made, resumed) in by_server.items():
            line += f"  {name} {us:7.0f}"
            if "resumed" in label and made:
                line += f" ({resumed}/{made - 1} resumed)"
        if ours and "nginx" in by_server:
            nginx = by_server["nginx"][0]
            line += f"  = {ours[0] / nginx:.2f}x nginx"
            line += "".join(f", {name} {by_server[name][0] / nginx:.2f}x" for name in ("python ssl floor", "design floor")
                            if name in by_server)
        print(line)
    print("  python ssl floor: benchmarks/ssl_floor.py, one thread answering from memory (no proxying), the least\n"
          "    a server on Python's ssl pays; design floor: the waitress hello-world's plain connection (no\n"
          "    proxying) plus what TLS adds to the ssl floor's: the least the design card's server can pay")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--cpu-seconds", type=float, default=2.0, help="per CPU-per-connection figure; 0 skips them")
    parser.add_argument("--only-cpu", action="store_true", help="only the CPU per new connection")
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    import trustme

    with bench.workspace("simpleproxy-tls-bench-") as (workdir, procs):
        ca = trustme.CA()
        leaf = ca.issue_cert("bench.example", "127.0.0.1")
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        if args.only_cpu:
            handshake_cpu(args, workdir, backend_port)
            return 0
        proc, http_port, https_port = start_https_proxy(workdir, "simpleproxy", cert, key, args.threads, backend_port)
        procs.append(proc)
        targets = {"simpleproxy https": (https_port, "https"), "simpleproxy http": (http_port, "http")}
        # What a relay design would cost before any TLS: one more loopback hop, byte for byte.
        relay, targets["relay + simpleproxy http"] = bench.start([sys.executable, str(HERE / "relay.py"), str(http_port)], cpu=0)
        targets["relay + simpleproxy http"] = (targets["relay + simpleproxy http"], "http")  # type: ignore[assignment]
        procs.append(relay)
        ng_https = bench.free_port()
        ng = None if args.skip_nginx else bench.start_nginx(
            workdir, backend_port,
            server=f"listen 127.0.0.1:{ng_https} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; "
                   "ssl_protocols TLSv1.2 TLSv1.3;",
        )
        if ng is not None:
            procs.append(ng[0])
            bench.wait_port(ng_https)
            targets["nginx https"] = (ng_https, "https")
            targets["nginx http"] = (ng[1], "http")
        runs = [("new connections", 16, True), ("keep-alive", 16, False)]
        for port, scheme in targets.values():
            _wrk(port, scheme, 16, 1, False)
        samples: dict[tuple[str, str], list[float]] = {}
        errors: dict[tuple[str, str], str] = {}
        for _ in range(args.rounds):
            for what, conns, close in runs:
                for name, (port, scheme) in targets.items():
                    r = _wrk(port, scheme, conns, args.duration, close)
                    samples.setdefault((name, what), []).append(r["rps"])
                    errors[(name, what)] = errors.get((name, what)) or r["errors"]
        print(f"\nTLS: medians of {args.rounds} rounds of {args.duration:g}s, 16 connections, 1 KiB GETs, "
              f"{bench.pinning_note()}, {args.threads} waitress threads")
        for what, _, close in runs:
            label = "req/s, each on a new connection (handshakes/s)" if close else "req/s, keep-alive"
            print(f"  {what}: {label}")
            for name in targets:
                values = sorted(samples[(name, what)])
                line = f"    {name:26} {values[len(values) // 2]:9.0f}  ({values[0]:.0f}-{values[-1]:.0f})"
                plain = name.replace("https", "http") if name.endswith("https") else None
                if name.startswith("relay"):
                    plain = "simpleproxy http"
                if plain is not None and (plain, what) in samples:
                    ratios = sorted(a / b for a, b in zip(samples[(name, what)], samples[(plain, what)], strict=True))
                    line += f"  {ratios[len(ratios) // 2]:.2f} of {plain}"
                print(line + (f"  {errors[(name, what)]}" if errors[(name, what)] else ""))
        bench.stop_all(procs[1:])  # the backend stays for the CPU figures
        del procs[1:]
        if args.cpu_seconds > 0:
            handshake_cpu(args, workdir, backend_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

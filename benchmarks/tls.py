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
Nothing pinned (simpleproxy binds itself to one CPU); ``--pin`` puts the servers on
CPU 0 and wrk and the backend on CPU 1, as benchmarks/run.py does. Needs
wrk (built with OpenSSL, as Debian's is) and trustme (``pip install .[test]``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--skip-nginx", action="store_true")
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    import trustme

    workdir = Path(tempfile.mkdtemp(prefix="simpleproxy-tls-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        ca = trustme.CA()
        leaf = ca.issue_cert("bench.example", "127.0.0.1")
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        http_port, https_port = bench.free_port(), bench.free_port()
        config = workdir / "simpleproxy.yaml"
        config.write_text(
            f"listen:\n  http: 127.0.0.1:{http_port}\n  https:\n    address: 127.0.0.1:{https_port}\n"
            f"    certificates: [{{cert: '{cert}', key: '{key}'}}]\n"
            f"server: {{threads: {args.threads}}}\n"
            f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\n"
            f"routes: [{{upstream: app}}]\nlog: {{access: '{workdir / 'access.log'}'}}\n"
        )
        proc, _ = bench.start_simpleproxy(config)
        procs.append(proc)
        bench.wait_port(https_port)
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
    finally:
        bench.stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

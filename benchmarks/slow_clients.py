"""Slow clients against simpleproxy and nginx, in one run: does an ordinary client still get served?

    python benchmarks/slow_clients.py [--seconds 60] [--connections 1500] [--rate 300] [--only H B X]

For each attack of Debian's ``slowhttptest`` (``apt-get install slowhttptest``),
run against each server in turn on loopback:

- ``-H`` slowloris: request heads trickled, a field every 10 s;
- ``-B`` slow body: a 64 KiB POST body trickled, a piece every 10 s;
- ``-X`` slow read: a 1 MiB response read 32 bytes every 5 s through a tiny window;

``--connections`` attacking connections opened at ``--rate`` a second for
``--seconds``, while an ordinary client sends one GET every 0.1 s with a 5 s
timeout, each on a new connection (as a new visitor arrives). Prints, per
server and attack, the ordinary client's successes, failures and slowest
answer. simpleproxy runs with its defaults (its access log off); nginx with
one worker and ``worker_connections 4096``, proxying to the same backend.
Everything stops by itself; only 127.0.0.1 is touched.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers)

ATTACKS = {
    "H": ("slowloris: heads trickled every 10 s", ["-H", "-i", "10", "-t", "GET"], "/bench/1k"),
    "B": ("slow body: a 64 KiB POST trickled every 10 s", ["-B", "-i", "10", "-s", "65536"], "/bench/1k"),
    "X": ("slow read: 1 MiB read 32 bytes every 5 s", ["-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "1"],
          "/bench/1m"),
}


def ordinary_client(port: int, until: float, results: dict) -> None:
    """One GET every 0.1 s, each on a new connection, 5 s timeout; counts and the slowest."""
    next_at = time.monotonic()
    while next_at < until:
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/bench/1k")
            response = conn.getresponse()
            response.read()
            conn.close()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        took = time.monotonic() - started
        results["ok" if ok else "failed"] += 1
        results["slowest"] = max(results["slowest"], took)
        next_at += 0.1
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the client's own pace, not a synchronisation


def attack(name: str, port: int, args: argparse.Namespace) -> dict:
    _, flags, path = ATTACKS[name]
    cmd = ["slowhttptest", *flags, "-c", str(args.connections), "-r", str(args.rate), "-l", str(args.seconds),
           "-p", "5", "-u", f"http://127.0.0.1:{port}{path}"]
    slow = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"ok": 0, "failed": 0, "slowest": 0.0}
    time.sleep(min(5.0, args.seconds / 4))  # let the attack build up before measuring
    ordinary_client(port, time.monotonic() + args.seconds * 0.75, results)
    try:
        slow.wait(timeout=args.seconds + 60)
    except subprocess.TimeoutExpired:
        slow.kill()
        slow.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--only", nargs="+", choices=sorted(ATTACKS), default=sorted(ATTACKS, key="HBX".index))
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--config", help="extra YAML for simpleproxy's server: section, e.g. '{threads: 16}'")
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    if not shutil.which("slowhttptest"):
        print("slowhttptest is needed: apt-get install slowhttptest", file=sys.stderr)
        return 2
    with bench.workspace("simpleproxy-slow-") as (workdir, procs):
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        config = workdir / "simpleproxy.yaml"
        server = f"server: {args.config}\n" if args.config else ""
        config.write_text(f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\n{server}"
                          f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\n"
                          "routes: [{upstream: app}]\nlog: {access: 'off'}\n")
        targets = {"simpleproxy": lambda: bench.start_simpleproxy(config)}
        if not args.skip_nginx:
            targets["nginx"] = lambda: bench.start_nginx(workdir, backend_port)  # type: ignore[assignment,return-value]
        print(f"{args.connections} attacking connections at {args.rate}/s for {args.seconds} s; an ordinary client "
              "sends a GET every 0.1 s (5 s timeout, a new connection each)")
        for attack_name in args.only:
            print(f"\n{ATTACKS[attack_name][0]} (slowhttptest {' '.join(ATTACKS[attack_name][1])})")
            for target, start in targets.items():  # a fresh server per attack: no leftovers from the last
                started = start()
                if started is None:
                    continue
                proc, port = started
                try:
                    r = attack(attack_name, port, args)
                finally:
                    bench.stop_all([proc])
                print(f"  {target:12} {r['ok']:5} ok {r['failed']:5} failed   slowest {r['slowest']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

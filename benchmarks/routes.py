"""Route rules: what header rules and a matcher cost, and static files against nginx's.

    python benchmarks/routes.py [--duration 4] [--rounds 3] [--connections 16] [--pin] [--skip-nginx]

1. One simpleproxy with two routes to benchmarks/backend.py: a bare one and one
   with a header matcher and three header rules (a request field set, one
   removed, a response field set); wrk sends the same request, with the
   matched field, to each, interleaved by round. The ratio is the ruled route's
   requests per second over the bare one's, per round, median.
2. Static files: a 1 KiB and a 1 MiB file from one directory, served by a
   simpleproxy ``static`` route and by nginx (one worker, ``root``, sendfile as
   Debian ships it), 16 connections.

Medians of the rounds; loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)

FIELDS = {"X-Bench": "1", "Cookie": "session=abc"}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def rules_cost(args: argparse.Namespace, workdir: Path, procs: list) -> None:
    backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
    procs.append(backend)
    config = workdir / "rules.yaml"
    config.write_text(
        f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\nlog: {{access: 'off'}}\n"
        f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\n"
        "routes:\n"
        "  - {path: /bare, upstream: app}\n"
        "  - path: /ruled\n    upstream: app\n    match: {headers: {X-Bench: '1'}}\n"
        "    request_headers: {set: {X-Env: prod}, remove: [Cookie]}\n"
        "    response_headers: {set: {X-Served-By: '{upstream}'}}\n"
    )
    proxy, port = bench.start_simpleproxy(config)
    procs.append(proxy)
    paths = {"bare route": "/bare/1k", "matcher + 3 header rules": "/ruled/1k"}
    for path in paths.values():
        bench.wrk(port, path, args.connections, 1, FIELDS)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            result = bench.wrk(port, path, args.connections, args.duration, FIELDS)
            if result["errors"]:
                raise RuntimeError(f"{name}: {result['errors']}")
            samples[name].append(result["rps"])
    ratios = [ruled / bare for ruled, bare in zip(samples["matcher + 3 header rules"], samples["bare route"], strict=True)]
    print(f"\n1. GET 1 KiB through the proxy, {args.connections} connections, medians of {args.rounds} rounds of "
          f"{args.duration:g}s ({bench.pinning_note()})")
    for name, values in samples.items():
        print(f"    {name:28} {_median(values):9.0f} req/s  ({min(values):.0f}-{max(values):.0f})")
    print(f"    ratio ruled/bare: {_median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


def static_files(args: argparse.Namespace, workdir: Path, procs: list) -> None:
    root = workdir / "public"
    root.mkdir()
    (root / "1k.txt").write_bytes(b"x" * 1024)
    (root / "1m.bin").write_bytes(bytes(range(256)) * 4096)
    config = workdir / "static.yaml"
    config.write_text(
        f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\nlog: {{access: 'off'}}\n"
        f"routes:\n  - {{path: /files, strip_prefix: true, static: {{root: '{root}'}}}}\n"
    )
    proxy, port = bench.start_simpleproxy(config)
    procs.append(proxy)
    targets = {"simpleproxy static": port}
    if not args.skip_nginx and (ng := bench.start_nginx(workdir, 9, server=f"location /files/ {{ alias {root}/; }}")):
        procs.append(ng[0])
        targets["nginx"] = ng[1]
    files = ("/files/1k.txt", "/files/1m.bin")
    for port in targets.values():
        for path in files:
            bench.wrk(port, path, 4, 1)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name, port in targets.items():
            for path in files:
                result = bench.wrk(port, path, args.connections, args.duration)
                if result["errors"]:
                    raise RuntimeError(f"{name} {path}: {result['errors']}")
                samples.setdefault((name, path), []).append(result)
    print(f"\n2. Static files, {args.connections} connections, medians of {args.rounds} rounds of {args.duration:g}s "
          f"({bench.pinning_note()})")
    print(f"    {'server':20} {'file':16} {'req/s':>9} {'MiB/s':>8} {'of nginx':>9}")
    for name in targets:
        for path in files:
            runs = samples[(name, path)]
            ratio = ""
            if "nginx" in targets and name != "nginx":
                ratios = [a["rps"] / b["rps"] for a, b in zip(runs, samples[("nginx", path)], strict=True)]
                ratio = f"{_median(ratios):9.2f}"
            print(f"    {name:20} {path:16} {_median([r['rps'] for r in runs]):9.0f} "
                  f"{_median([r['mibs'] for r in runs]):8.0f} {ratio}")


def main() -> int:
    parser = bench.wrk_parser(__doc__)
    parser.add_argument("--only", choices=("rules", "static"))
    args = parser.parse_args()
    if not bench.ready_for_wrk(args):
        return 1
    with bench.workspace("simpleproxy-routes-bench-") as (workdir, procs):
        if args.only in (None, "rules"):
            rules_cost(args, workdir, procs)
        if args.only in (None, "static"):
            static_files(args, workdir, procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

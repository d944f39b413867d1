"""Response compression: throughput and ratio per encoding for a 100 KiB JSON answer, against nginx's gzip.

    python benchmarks/compression.py [--duration 4] [--rounds 3] [--connections 16] [--pin] [--skip-nginx]

One simpleproxy (``compress: true``, default levels: zstd 3, brotli 4, gzip 5)
in front of benchmarks/backend.py's ``/json`` (100 KiB of API records); wrk
asks it with ``Accept-Encoding`` naming one encoding at a time, and once with
``identity`` (the same proxy, nothing encoded). nginx (one worker, ``gzip on``
at ``gzip_comp_level 5``) proxies the same backend in the same run, where
installed. The ratio is the encoded size over the original. Medians of the
rounds; loopback only, bounded in time.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)

PATH = "/api/json"


def size_of(port: int, encoding: str) -> tuple[int, str]:
    """The body's size on the wire for ``Accept-Encoding: encoding``, and the encoding sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", PATH, headers={"Accept-Encoding": encoding})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return len(body), answer.getheader("Content-Encoding") or "identity"


def main() -> int:
    parser = bench.wrk_parser(__doc__)
    args = parser.parse_args()
    if not bench.ready_for_wrk(args):
        return 1
    with bench.workspace("simpleproxy-compression-bench-") as (workdir, procs):
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        config = workdir / "proxy.yaml"
        config.write_text(f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\nlog: {{access: 'off'}}\ncompress: true\n"
                          f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\n"
                          "routes: [{upstream: app}]\n")
        proxy, port = bench.start_simpleproxy(config)
        procs.append(proxy)
        targets = {f"simpleproxy {name}": (port, name) for name in ("identity", "gzip", "br", "zstd")}
        if not args.skip_nginx and (ng := bench.start_nginx(
                workdir, backend_port,
                http="gzip on; gzip_comp_level 5; gzip_types application/json; gzip_min_length 1024; gzip_proxied any;")):
            procs.append(ng[0])
            targets["nginx gzip"] = (ng[1], "gzip")
        original = size_of(port, "identity")[0]
        for target, (where, encoding) in targets.items():  # warm up; check each answers as asked
            sent = size_of(where, encoding)[1]
            if sent != encoding:
                raise RuntimeError(f"{target}: asked for {encoding}, got {sent}")
            bench.wrk(where, PATH, args.connections, 1, {"Accept-Encoding": encoding})
        samples: dict[str, list[float]] = {target: [] for target in targets}
        for _ in range(args.rounds):
            for target, (where, encoding) in targets.items():
                result = bench.wrk(where, PATH, args.connections, args.duration, {"Accept-Encoding": encoding})
                if result["errors"]:
                    raise RuntimeError(f"{target}: {result['errors']}")
                samples[target].append(result["rps"])
        pinned = ", pinned" if args.pin else ", unpinned"
        print(f"\n100 KiB JSON ({original} bytes), {args.connections} connections, {args.rounds} rounds of "
              f"{args.duration:g}s{pinned}")
        print(f"  {'target':22} {'req/s':>8} {'MiB/s in':>9} {'ratio':>7}")
        for target, (where, encoding) in targets.items():
            rps = sorted(samples[target])[len(samples[target]) // 2]
            ratio = size_of(where, encoding)[0] / original
            print(f"  {target:22} {rps:8.0f} {rps * original / 2**20:9.1f} {ratio:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

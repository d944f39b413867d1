"""The ``simpleproxy`` command: run, check, reload, route, demo, --version."""

from __future__ import annotations

import argparse
import getpass
import importlib.resources
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import Config, load_config
from .errors import ConfigError

log = logging.getLogger("simpleproxy")


def default_config_path() -> Path:
    """``./simpleproxy.yaml`` if present, else the shipped ``conf/simpleproxy.yaml``."""
    local = Path("simpleproxy.yaml")
    if local.is_file():
        return local
    return shipped_config_path()


def shipped_config_path() -> Path:
    """The default configuration installed with the package (``conf/`` in a checkout)."""
    try:
        shipped = importlib.resources.files("simpleproxy.conf") / "simpleproxy.yaml"
        if shipped.is_file():
            return Path(str(shipped))
    except ModuleNotFoundError:
        pass
    # Running from a source checkout: conf/ sits beside the package.
    return Path(__file__).resolve().parent.parent / "conf" / "simpleproxy.yaml"


def _load(path: str | None) -> tuple[Config | None, Path]:
    config_path = Path(path) if path else default_config_path()
    try:
        return load_config(config_path), config_path
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, config_path


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_check(args: argparse.Namespace) -> int:
    config, path = _load(args.config)
    if config is None:
        return 1
    print(f"{path}: configuration is valid")
    print(describe_listeners(config))
    print(describe_routes(config))
    for warning in certificate_warnings(config, time.time()):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_listeners(config: Config) -> str:
    """Every listener: plain HTTP, HTTPS with each certificate's names and expiry, the admin one."""
    from .tls.certs import certificate_expiry, certificate_names

    lines = ["listen: " + ", ".join(f"http://{_where(h, p)}" for h, p in config.listen)]
    if config.https is not None:
        https = config.https
        lines.append("listen.https: " + ", ".join(f"https://{_where(h, p)}" for h, p in https.addresses)
                     + f" (TLS {https.min_version}+, client certificates {https.client_auth})")
        for i, cert in enumerate(https.certificates):
            expires = time.strftime("%Y-%m-%d", time.gmtime(certificate_expiry(cert.cert)))
            default = ", the default" if i == 0 else ""
            lines.append(f"  certificates[{i}] {cert.cert}: {', '.join(certificate_names(cert.cert))}; "
                         f"expires {expires}{default}")
    if config.admin.listen is not None:
        guard = "a bearer token" if config.admin.token else "loopback clients only"
        lines.append(f"admin.listen: http://{_where(*config.admin.listen)} ({guard})")
    return "\n".join(lines)


def certificate_warnings(config: Config, now: float, within_days: int = 30) -> list[str]:
    """Certificates that have expired or expire within ``within_days``, by their key."""
    from .tls.certs import certificate_expiry

    warnings = []
    for i, cert in enumerate(config.https.certificates if config.https else ()):
        left = (certificate_expiry(cert.cert) - now) / 86400
        key = f"listen.https.certificates[{i}]"
        if left < 0:
            warnings.append(f"{key}: {cert.cert} expired {-left:.0f} days ago")
        elif left < within_days:
            warnings.append(f"{key}: {cert.cert} expires in {left:.0f} days")
    return warnings


def describe_routes(config: Config) -> str:
    """One line per route, as the proxy understood it."""
    lines = [f"routes ({len(config.routes)}):"]
    for route in config.routes:
        host = route.host or "(any host)"
        if route.respond is not None:
            action = f"respond {route.respond.status}"
        elif route.redirect is not None:
            action = f"redirect {route.redirect.status} to {route.redirect.to}"
        elif route.static is not None:
            action = f"static {route.static.root}" + (f" (fallback {route.static.fallback})" if route.static.fallback else "")
        else:
            upstream = config.upstreams.get(route.upstream or "")
            servers = ", ".join(s.url + (f" weight {s.weight}" if s.weight != 1 else "") for s in upstream.servers) if upstream else "?"
            policy = upstream.balance.replace("_", " ") if upstream else "?"
            action = f"upstream {route.upstream} ({policy}: {servers})"
        extras = []
        if route.strip_prefix:
            extras.append("strip_prefix")
        if route.host_header != "client":
            extras.append(f"host_header={route.host_header}")
        if route.match is not None:
            m = route.match
            extras += [f"methods={','.join(m.methods)}"] if m.methods else []
            extras += [f"header {name}={value}" for name, value in m.headers]
            extras += [f"query {name}={value}" for name, value in m.query]
            extras += [f"clients={','.join(map(str, m.clients))}"] if m.clients else []
            extras += [f"path_regex={m.path_regex}"] if m.path_regex else []
        if route.rewrite is not None:
            extras.append(f"rewrite {route.rewrite.regex} -> {route.rewrite.replace}")
        if route.add_prefix:
            extras.append(f"add_prefix={route.add_prefix}")
        for side, rules in (("request", route.request_headers), ("response", route.response_headers)):
            if rules:
                extras.append(f"{side}_headers: set {len(rules.set)}, add {len(rules.add)}, remove {len(rules.remove)}")
        if route.errors is not None:
            extras.append("errors " + ",".join(str(code) for code, _ in route.errors.pages)
                          + (" (intercept)" if route.errors.intercept else ""))
        extra = f"  [{', '.join(extras)}]" if extras else ""
        lines.append(f"  {route.key:<11} {host:<24} {route.path:<16} -> {action}{extra}")
    return "\n".join(lines)


def cmd_route(args: argparse.Namespace) -> int:
    """Explain what a request would meet; exit 0 when it would reach a backend."""
    from .explain import explain

    config, _ = _load(args.config)
    if config is None:
        return 1
    headers = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"error: --header {item!r}: write it as Name: value", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    status, text = explain(config, args.url, args.method, headers)
    print(text)
    return 0 if status == 0 else 3


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask a running proxy to reload, through its admin listener (the way that works on Windows)."""
    import http.client
    import json

    config, path = _load(args.config)
    if config is None:
        return 1
    if config.admin.listen is None:
        print(f"error: {path} has no admin.listen; reload with SIGHUP, or add an admin listener", file=sys.stderr)
        return 1
    host, port = config.admin.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    headers = {"X-Simpleproxy-Admin": "1"}
    if config.admin.token:
        headers["Authorization"] = f"Bearer {config.admin.token}"
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("POST", "/reload", headers=headers)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        conn.close()
    except OSError as exc:
        print(f"error: no proxy answers on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if response.status == 200:
        print("reloaded")
        return 0
    try:
        problems = json.loads(body).get("problems") or [body.strip()]
    except ValueError:
        problems = [body.strip()]
    print(f"error: reload refused ({response.status}); the running configuration stays:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    config, path = _load(args.config)
    if config is None:
        return 1
    _setup_logging(config.log.level)
    return serve(config, f"configuration {path}", str(path))


def serve(config: Config, what: str, path: str | None = None) -> int:
    """Run a proxy for ``config`` in this thread until Ctrl-C or SIGTERM; SIGHUP reloads ``path``."""
    from .affinity import bind_process
    from .errors import ListenError, WaitressMismatch
    from .server import ProxyServer, install_reload_signal, install_stop_signals

    try:  # before ProxyServer starts its threads, so that they inherit the binding
        binding = bind_process(config.server.cpu_affinity)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        server = ProxyServer(config, config_path=path)
    except (ListenError, WaitressMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # anything else the system refused (files, the loop's wake-up pipe)
        print(f"error: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    install_stop_signals(server, config.server.drain_time)
    install_reload_signal(server)
    for scheme, addresses in (("http", server.addresses), ("https", server.https_addresses)):
        for host, port in addresses:
            shown = f"[{host}]" if ":" in host else host
            log.info("simpleproxy %s listening on %s://%s:%d (%s)", __version__, scheme, shown, port, what)
    (log.warning if binding.failed else log.info)("%s", binding.describe())
    for warning in certificate_warnings(config, time.time()):
        log.warning("%s", warning)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - waitress catches it first
        pass
    log.info("stopped")
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print a bcrypt hash for basic_auth. The password is read without echo from a terminal
    (twice, to catch a typo), else as the first line of standard input (scripts)."""
    if importlib.util.find_spec("bcrypt") is None:
        print("error: hashing needs the bcrypt package: pip install 'simpleproxy[auth]'", file=sys.stderr)
        return 1
    from .security.basic_auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("error: an empty password", file=sys.stderr)
        return 1
    if len(password.encode("utf-8")) > 72:
        print("warning: bcrypt reads the first 72 bytes of a password; the rest is not checked", file=sys.stderr)
    hashed = hash_password(password, args.rounds)
    print(f"{args.user}:{hashed}" if args.user else hashed)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _setup_logging("info")
    return run_demo(args.listen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simpleproxy", description="A reverse proxy for simple deployments.")
    parser.add_argument("--version", action="version", version=f"simpleproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    config_help = "YAML file (default: ./simpleproxy.yaml, else the shipped conf/simpleproxy.yaml)"

    run = commands.add_parser("run", help="serve with a configuration file")
    run.add_argument("--config", "-c", help=config_help)
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="validate a configuration and show its routes")
    check.add_argument("--config", "-c", help=config_help)
    check.set_defaults(func=cmd_check)

    reload = commands.add_parser("reload", help="make a running proxy reload its configuration (via admin.listen)")
    reload.add_argument("--config", "-c", help=config_help)
    reload.set_defaults(func=cmd_reload)

    route = commands.add_parser("route", help="explain which route, upstream, cache and rules a request would meet")
    route.add_argument("url", help="the request URL, e.g. http://app.example.com/api/x?y=1")
    route.add_argument("--config", "-c", help=config_help)
    route.add_argument("--method", "-X", default="GET")
    route.add_argument("--header", "-H", action="append", help="a request header, 'Name: value' (repeatable)")
    route.set_defaults(func=cmd_route)

    hashing = commands.add_parser("hash-password", help="print a bcrypt hash for basic_auth (reads the password without echo)")
    hashing.add_argument("user", nargs="?", help="print 'user:hash', a line for an htpasswd file")
    hashing.add_argument("--rounds", type=int, default=12, choices=range(10, 16), metavar="10..15",
                         help="bcrypt's cost: each step doubles the work of a check (default 12)")
    hashing.set_defaults(func=cmd_hash_password)

    demo = commands.add_parser("demo", help="start two demo backends and a proxy in front of them")
    demo.add_argument("--listen", default="127.0.0.1:8080", help="proxy address (default 127.0.0.1:8080)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))

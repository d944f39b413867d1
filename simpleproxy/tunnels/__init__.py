"""Upgraded connections (WebSocket and other ``101 Switching Protocols``), beside the WSGI path.

PEP 3333 gives an application no way to take over the client's socket, so an
upgrade is served in three steps: the request goes through the same route and
filters as any other (access, WAF, limits); the upstream handler sends it with
``Connection: Upgrade`` and, on the backend's 101, takes the backend socket out
of its pool; then the front end lends the client socket (the upgrade contract in
``simpleproxy/upgrade.py``) and :mod:`.relay` moves bytes both ways on one
thread for all tunnels. Ordinary requests pay one check for all this.

:class:`Tunnels` is the registry: how many are open (in all and per route),
the limits, and the counts for metrics. It outlives reloads (a new
configuration's state takes it over), so tunnels survive them, and it refuses
new tunnels while the server drains.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import TunnelRefused
from .relay import Relay, Tunnel

__all__ = ["Relay", "Tunnel", "TunnelRefused", "Tunnels"]


class Tunnels:
    """Open tunnels, their limits and counts; the relay thread is started on first use."""

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total  #: 0: no bound (beyond the per-route ones)
        self.draining = False  #: set by a graceful stop: new upgrades get 503
        self._closed = False
        self._lock = threading.Lock()
        self._relay: Relay | None = None
        self.open = 0
        self._by_route: dict[str, int] = {}
        self.opened = 0  #: tunnels ever opened
        self.refused = {"limit": 0, "draining": 0}
        self.bytes = {"up": 0, "down": 0}  #: relayed by closed tunnels

    def reserve(self, label: str, route_max: int) -> None:
        """Count a tunnel in before the backend is asked; 503 when a limit is reached."""
        with self._lock:
            if self.draining:
                self.refused["draining"] += 1
                raise TunnelRefused("shutting down: no new upgraded connections", headers=(("Retry-After", "1"),))
            on_route = self._by_route.get(label, 0)
            if (self.max_total and self.open >= self.max_total) or (route_max and on_route >= route_max):
                self.refused["limit"] += 1
                raise TunnelRefused("too many upgraded connections", headers=(("Retry-After", "1"),))
            self.open += 1
            self._by_route[label] = on_route + 1

    def release(self, label: str) -> None:
        """Count a tunnel out: it ended, or the backend did not switch protocols."""
        with self._lock:
            self.open -= 1
            left = self._by_route.get(label, 1) - 1
            if left:
                self._by_route[label] = left
            else:
                self._by_route.pop(label, None)

    def start(self, tunnel: Tunnel) -> None:
        with self._lock:
            relay = None
            if not self._closed:  # else the proxy is shutting down: no new relay thread
                if self._relay is None:
                    self._relay = Relay()
                relay = self._relay
                self.opened += 1
        if relay is None:
            tunnel.reason = "shutdown"
            tunnel.close()
            tunnel.on_close(tunnel)
            return
        relay.add(tunnel)

    def ended(self, tunnel: Tunnel) -> None:
        """Called from the relay when a tunnel closed: its bytes go to the totals."""
        with self._lock:
            self.bytes["up"] += tunnel.bytes_up
            self.bytes["down"] += tunnel.bytes_down

    def by_route(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_route)

    def close(self) -> None:
        """Close every tunnel (a clean TCP close both ways) and stop the relay thread."""
        with self._lock:
            relay, self._relay = self._relay, None
            self._closed = True
        if relay is not None:
            relay.stop()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"open": self.open, "opened": self.opened, "refused": dict(self.refused),
                    "bytes": dict(self.bytes)}

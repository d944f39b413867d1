"""Listening sockets, bound by us rather than by waitress, so that one port has one owner.

On Windows, ``SO_REUSEADDR`` lets a second process bind a port that is already
listening and steal part of its connections; a server there should bind with
``SO_EXCLUSIVEADDRUSE`` instead (Microsoft's guidance for services). waitress
sets ``SO_REUSEADDR`` on the sockets it creates, so the proxy binds its own
and hands them over (``create_server(sockets=...)``); waitress's later attempt
to add ``SO_REUSEADDR`` to an exclusive socket fails, and waitress ignores that
failure. Elsewhere ``SO_REUSEADDR`` is kept: on POSIX systems it only allows
rebinding over connections in TIME_WAIT after a restart.

The proxy's listeners also bound what an accepted connection's kernel send
queue may hold unsent (``TCP_NOTSENT_LOWAT``, inherited at accept) until the
client has taken some of it (channel.py lifts the bound). Without it the kernel takes
up to the whole send buffer (4 MiB on Linux loopback) from each connection,
however slowly its client reads, and none of it counts in
``server.max_buffered_total``: under slowhttptest's slow read, 1,500 clients
reading 32 bytes every 5 s through a 512-byte window left 2.5 MB of kernel
memory each (the window also cuts the queue into 512-byte packets, two
thousand allocations per MiB), past the system's TCP memory limit, and 80% of
the proxy's CPU went to those sends. Linux honours the bound in ``send()``;
macOS has the option but only for ``poll()`` (``send()`` still fills the
buffer), Windows has none.
"""

from __future__ import annotations

import logging
import socket
from typing import Iterable

from ..errors import ListenError

#: bytes an accepted connection's send queue may hold that the kernel has not sent yet, until the
#: client has taken UNSENT_LOWAT (then the system's default: no bound; channel.py)
UNSENT_LOWAT = 256 * 1024
#: the socket option that bounds them, where the platform has one (Linux, macOS; not Windows, which
#: sizes its send queues itself)
NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)

log = logging.getLogger("simpleproxy")


def bind_listener(family: int, sockaddr: tuple, backlog: int, bound_unsent: bool = True) -> socket.socket:
    """A listening TCP socket on one resolved address; ``bound_unsent``: its connections' unsent
    bytes bounded until lifted (the proxy's channels lift it; the admin server's would not)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no one else may bind the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bound_unsent and NOTSENT_LOWAT is not None:  # inherited by every accepted connection
            try:
                sock.setsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT, UNSENT_LOWAT)
            except OSError as exc:  # a kernel without it (WSL 1, some sandboxes): serve unbounded
                log.debug("TCP_NOTSENT_LOWAT refused (%s): connections' send queues are unbounded", exc)
        if family == socket.AF_INET6:  # as waitress does: [::] means IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def unbound_unsent(sock: socket.socket) -> None:
    """Give a connection the system's default bound on unsent bytes back (0: ``sysctl
    net.ipv4.tcp_notsent_lowat``, none unless set there)."""
    if NOTSENT_LOWAT is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT, 0)
        except OSError:
            pass  # closed meanwhile


def _resolved(host: str, port: int) -> list[tuple[int, tuple]]:
    """(family, sockaddr) for each address ``host`` resolves to, as waitress binds them all."""
    found: dict[tuple, int] = {}
    for family, _, _, _, sockaddr in socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
    ):
        if family in (socket.AF_INET, socket.AF_INET6):
            found.setdefault(sockaddr, family)
    return [(family, sockaddr) for sockaddr, family in found.items()]


def bind_all(addresses: Iterable[tuple[str, int]], backlog: int, key: str = "listen.http",
             bound_unsent: bool = True) -> list[socket.socket]:
    """Listening sockets for every configured ``(host, port)``; none left open if one fails.

    A failure is a :class:`ListenError` naming ``key`` and the address that failed.
    """
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            try:
                for family, sockaddr in _resolved(host, port):
                    sockets.append(bind_listener(family, sockaddr, backlog, bound_unsent))
            except OSError as exc:
                raise ListenError(key, (host, port), exc) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets

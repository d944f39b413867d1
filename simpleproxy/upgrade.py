"""The upgrade contract: how the front end lends the app a client's connection (WebSocket tunnels).

A WSGI application cannot take its client's socket: the server owns it and
writes the response the application returns. For an upgrade the app needs the
socket itself, so the front end (simpleproxy/frontend/) puts an
:class:`UpgradeOffer` into the environ of every request that asks to upgrade,
under :data:`UPGRADE`. The app either ignores it (the request is answered as
any other; the connection is closed after the answer) or calls
:meth:`UpgradeOffer.detach` once it has the backend's ``101``: from then on the
socket is the app's and the front end writes nothing more on it.

Under another WSGI server the key is absent, and upgrades are refused as the
README says (those servers cannot lend a socket).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable, Protocol

#: the environ key of an :class:`UpgradeOffer`; present only on requests asking to upgrade
UPGRADE = "simpleproxy.upgrade"


@dataclass(frozen=True)
class DetachedConnection:
    """A client connection the front end has let go of."""

    #: the client's socket (a TLS socket when the client came over HTTPS), blocking mode not assumed
    sock: socket.socket
    #: bytes the client sent after the request head, already read by the front end (a first frame)
    buffered: bytes
    #: to call once the connection is closed: the front end stops counting it (per-client limits)
    release: Callable[[], None]


class UpgradeOffer(Protocol):
    """What the front end offers an upgrade request."""

    def detach(self) -> DetachedConnection | None:
        """Take the client connection out of the front end; None if the client has gone.

        Called from the thread serving the request, at most once; whatever the
        application then returns is not written to the client.
        """

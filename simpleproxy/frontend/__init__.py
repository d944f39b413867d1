"""The front end: the only part of simpleproxy that knows waitress.

Everything a client connection meets before the WSGI call lives here: the
listening sockets (:mod:`.listeners`), waitress's wiring and loop
(:mod:`.server`), the channel and its output buffering (:mod:`.channel`), the
strict request parser and its fast path (:mod:`.parser`), the response head
(:mod:`.response_head`), the flood and slow-client guards (:mod:`.guards`), TLS
termination in the loop (:mod:`.tls`), and the upgrade contract's waitress side
(:mod:`.upgrade`). :mod:`.contract` lists what of waitress's internals all this
relies on and checks it at start-up. Outside this package the proxy is plain
WSGI code, served here or by any other WSGI server.
"""

from .contract import TESTED as WAITRESS_TESTED
from .listeners import bind_all, bind_listener
from .server import Front, SmallServer, raise_open_file_limit, waitress_settings

__all__ = ["WAITRESS_TESTED", "Front", "SmallServer", "bind_all", "bind_listener",
           "raise_open_file_limit", "waitress_settings"]

"""``basic_auth``: HTTP Basic authentication (RFC 7617) against bcrypt hashes, as nginx's
``auth_basic``, Caddy's ``basic_auth`` and Traefik's BasicAuth do it.

bcrypt is slow on purpose (about 60 ms a check at cost 10), so checking every
request would cap a route at a few dozen requests a second per core. A
verified ``Authorization`` value is kept, by its SHA-256 (never the password
itself), in a bounded memo that a reload drops with the filter; only a value
never seen, or seen wrong, costs a bcrypt check. A wrong user name costs the
same check as a wrong password (against a real hash), so timing does not tell
which names exist. Wrong attempts answer 401 and count toward the ``bots`` ban
(a first request without credentials does not).

On success the backend gets ``X-Forwarded-User`` (which the proxy never takes
from a client, see headers.py) and, unless ``forward_credentials``, no
``Authorization``: the password stays at the edge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ..config import BasicAuth
from ..errors import AuthRequired
from ..memo import Memo
from ..request import Request
from ..response import Handler, Response

#: the Authorization values verified at once, at most (each a 32-byte digest and a name)
VERIFIED_LIMIT = 4096


class BasicAuthFilter:
    """``filter(request, next)``: 401 unless the request carries a user's right password."""

    def __init__(self, settings: BasicAuth, where: str = "basic_auth") -> None:
        import bcrypt  # an extra (simpleproxy[auth]); the configuration reader checked it is there

        self._checkpw = bcrypt.checkpw
        self.where = where  #: the configuration key, for ``simpleproxy route``
        self.realm = settings.realm
        self.forward_credentials = settings.forward_credentials
        self._hashes = {name: stored.encode("ascii") for name, stored in settings.users}
        #: what an unknown user is checked against: a real hash, so the work is the same
        self._decoy = next(iter(self._hashes.values()))
        self._verified: Memo[bytes, str] = Memo(None, VERIFIED_LIMIT)  #: SHA-256 of the header -> user

    def user(self, header: str) -> str | None:
        """The user an ``Authorization`` value proves, or None."""
        digest = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        known = self._verified.get(digest)
        if known is not None:
            return known
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "basic":  # RFC 9110 section 11.1: schemes are case-insensitive
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        name, colon, password = decoded.partition(":")
        if not colon:
            return None
        stored = self._hashes.get(name)
        # bcrypt reads 72 bytes; htpasswd -B and every bcrypt library hash that much of a longer password
        matched = self._checkpw(password.encode("utf-8")[:72], stored or self._decoy)
        if not (matched and stored is not None):
            return None
        self._verified.add(digest, name)
        return name

    def __call__(self, request: Request, next: Handler) -> Response:
        environ = request.environ
        header = environ.get("HTTP_AUTHORIZATION")
        user = self.user(header) if header else None
        if user is None:
            raise AuthRequired(self.realm, attempted=header is not None)
        request.user = user
        request.authenticated = True
        if not self.forward_credentials:
            del environ["HTTP_AUTHORIZATION"]  # the cache still treats it as a request with credentials
        return next(request)


def hash_password(password: str, rounds: int = 12) -> str:
    """A bcrypt hash for a users file or ``users:`` (``simpleproxy hash-password``)."""
    import bcrypt

    return bcrypt.hashpw(password.encode("utf-8")[:72], bcrypt.gensalt(rounds)).decode("ascii")

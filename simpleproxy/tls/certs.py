"""Server certificates: loading them strictly, choosing one by SNI, and reloading them.

Each certificate gets its own ``SSLContext`` with the same protocol settings
(Mozilla's "intermediate" profile or stricter); the names it answers for are
read from the certificate itself (subjectAltName DNS names, else the common
name). A handshake starts on the first certificate's context and the SNI
callback switches to the best match: the exact name, then the longest
wildcard, then that first certificate as the default, as nginx and Caddy do.

Reloading builds a whole new set of contexts and swaps it in with one
assignment: handshakes in progress finish on the set they started with, and
connections already established keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Certificate, HTTPSListener
from ..errors import CertificateError

log = logging.getLogger("simpleproxy.tls")

#: Mozilla "intermediate" TLS 1.2 suites (forward secret, AEAD only); TLS 1.3 suites are all good.
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))


class _NoPassword(Exception):
    """Raised from OpenSSL's password callback: the key is encrypted and no password was given."""


def _no_password() -> bytes:
    # Without a callback OpenSSL asks on the terminal ("Enter PEM pass phrase:"), and a service
    # would hang on it or fail with "Invalid argument"; never prompt.
    raise _NoPassword


def load_key_pair(context: ssl.SSLContext, certfile: str, keyfile: str | None, password: str | None,
                  key: str) -> None:
    """``context.load_cert_chain`` with errors a person can act on, each naming the key at fault:
    ``key`` is the config key of the certificate entry (``https.certificates[0]``,
    ``upstreams.api.tls``). A :class:`CertificateError` says which problem it is: an encrypted key
    without ``password``, a wrong password, no private key in the file, a key that is not the
    certificate's."""
    keypath = keyfile or certfile
    try:
        context.load_cert_chain(certfile, keyfile, password=password if password is not None else _no_password)
    except _NoPassword:
        raise CertificateError(f"{key}.password", f"the key in {keypath} is encrypted: set password") from None
    except OSError as exc:
        if not isinstance(exc, ssl.SSLError):
            raise CertificateError(f"{key}.cert", f"cannot read it: {exc.strerror or exc}") from None
        reason = exc.reason or ""
        if reason == "KEY_VALUES_MISMATCH":
            raise CertificateError(f"{key}.key" if keyfile else f"{key}.cert",
                                   "the private key is not the certificate's") from None
        text = _pem_text(keypath)
        if "PRIVATE KEY-----" not in text:
            raise CertificateError(f"{key}.key" if keyfile else f"{key}.cert", f"no private key in {keypath}") from None
        if password is not None and ("ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text):
            raise CertificateError(f"{key}.password", f"wrong password for the key in {keypath}") from None
        problem = reason or str(exc)
        raise CertificateError(f"{key}.cert", f"certificate and key do not load ({problem})") from None


def _pem_text(path: str) -> str:
    try:
        return Path(path).read_text("latin-1")
    except OSError:
        return ""


def _decoded(path: str) -> dict[str, Any]:
    """A PEM certificate's fields (its first one), as ``getpeercert()`` gives them."""
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:  # pragma: no cover - every CPython from 3.3 to 3.13 has it
        raise CertificateError("cert", "this Python cannot read names from a certificate")
    try:
        return decode(path)  # type: ignore[no-any-return]
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError("cert", f"not a PEM certificate ({getattr(exc, 'reason', None) or exc})") from None


def certificate_expiry(path: str) -> float:
    """When a PEM certificate (its first one) stops being valid, in seconds since the epoch."""
    return float(ssl.cert_time_to_seconds(_decoded(path)["notAfter"]))


def certificate_names(path: str) -> list[str]:
    """The DNS names a PEM certificate (its first one) is valid for, lower-cased."""
    info = _decoded(path)
    names = [value.lower() for kind, value in info.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value.lower() for rdn in info.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names


def server_context(listener: HTTPSListener) -> ssl.SSLContext:
    """A server context with the listener's protocol settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if listener.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    if listener.client_auth != "off" and listener.client_ca:
        context.load_verify_locations(cafile=listener.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if listener.client_auth == "required" else ssl.CERT_OPTIONAL
    return context


def load_certificate(listener: HTTPSListener, cert: Certificate, key: str) -> tuple[ssl.SSLContext, list[str]]:
    """One certificate's context and names; :class:`CertificateError` names what is wrong."""
    context = server_context(listener)
    certfile = cert.cert
    bundle = None
    try:
        if cert.chain:  # load_cert_chain takes one file: the certificate, then its chain
            with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as out:
                out.write(Path(cert.cert).read_bytes().rstrip(b"\n") + b"\n" + Path(cert.chain).read_bytes())
                bundle = certfile = out.name
        load_key_pair(context, certfile, cert.key, cert.password, key)
    except OSError as exc:  # the certificate or the chain could not be read to join them
        raise CertificateError(f"{key}.chain", f"cannot read {cert.cert} or {cert.chain}: {exc.strerror or exc}") from None
    finally:
        if bundle:
            os.unlink(bundle)
    names = certificate_names(cert.cert)
    if not names:
        raise CertificateError(f"{key}.cert", "the certificate names no host (no DNS subjectAltName or common name)")
    return context, names


@dataclass
class CertificateSet:
    """Contexts by name: exact names, wildcard suffixes, and the default (the first certificate)."""

    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext]
    wildcard: dict[str, ssl.SSLContext]  #: ".example.com" for "*.example.com"

    def choose(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        context = self.exact.get(name)
        if context is not None:
            return context
        # "*.example.com" covers one label: a.example.com, not a.b.example.com (RFC 6125 6.4.3)
        _, dot, parent = name.partition(".")
        return self.wildcard.get(dot + parent, self.default) if dot else self.default


class Certificates:
    """The listener's certificates, reloadable while it serves."""

    def __init__(self, listener: HTTPSListener) -> None:
        self.listener = listener
        self._mtimes = self._stat()
        self.current = self._load()

    @property
    def context(self) -> ssl.SSLContext:
        """The context a handshake starts on: the default's, whose SNI callback picks the real one."""
        return self.current.default

    def _load(self) -> CertificateSet:
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        default = None
        for i, cert in enumerate(self.listener.certificates):
            context, names = load_certificate(self.listener, cert, f"listen.https.certificates[{i}]")
            default = default or context
            for name in names:
                if name.startswith("*."):
                    wildcard.setdefault(name[1:], context)
                else:
                    exact.setdefault(name, context)
        assert default is not None
        default.sni_callback = self._sni
        return CertificateSet(default, exact, wildcard)

    def _sni(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        sslobj.sni = server_name  # the server side of ssl keeps no record of it
        chosen = self.current.choose(server_name)
        if chosen is not context:
            sslobj.context = chosen

    def _stat(self) -> tuple[float, ...]:
        times = []
        for cert in self.listener.certificates:
            for path in (cert.cert, cert.key, cert.chain):
                try:
                    times.append(os.stat(path).st_mtime if path else 0.0)
                except OSError:
                    times.append(-1.0)
        return tuple(times)

    def reload(self) -> bool:
        """Load every certificate again and swap them in; on any error keep the current set."""
        mtimes = self._stat()
        try:
            fresh = self._load()
        except CertificateError as exc:
            log.error("certificates not reloaded: %s: %s", exc.key, exc)
            self._mtimes = mtimes  # do not retry a broken file until it changes again
            return False
        self.current, self._mtimes = fresh, mtimes
        log.info("certificates reloaded")
        return True

    def reload_if_changed(self) -> bool:
        """Reload when a certificate, key or chain file changed since the last (re)load."""
        if self._stat() == self._mtimes:
            return False
        return self.reload()

"""Parsers for the value types a configuration file spells as text.

Each function takes what YAML produced and returns a plain Python value or
raises ``ValueError`` with a message meant for a person; the config walker
prefixes it with the key path.
"""

from __future__ import annotations

import ipaddress
import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
# RFC 3986 reg-name restricted to DNS-ish labels; IP literals are checked separately.
_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


def parse_duration(value: object) -> float:
    """``250ms``, ``5s``, ``2m``, ``1h`` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 5s or 250ms, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _NUMBER_UNIT.fullmatch(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _DURATION_UNITS:
            raise ValueError(f"expected a duration like 5s, 250ms or 2m, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """``16KiB``, ``10MiB``, ``1GB``, ``512B`` or a bare number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 16KiB or 10MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _NUMBER_UNIT.fullmatch(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"expected a size like 16KiB, 10MiB or 1GB, got {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return size


def is_valid_host(host: str) -> bool:
    """True for a DNS name, an IPv4 address or a bracketed IPv6 literal."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.fullmatch(host))


def parse_address(value: object) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8080``) -> ``(host, port)``; host without brackets."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {value!r}")
    host, _, port_text = value.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    if host in ("", "*"):
        host = "0.0.0.0"
    if not is_valid_host(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host.strip("[]"), int(port_text)


def parse_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.0.0.0/8``, ``::1`` or ``192.0.2.7`` (a single address) -> a network."""
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


def parse_share(value: object) -> float:
    """``20%`` or ``0.2`` -> 0.2."""
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"expected a share like 20% or 0.2, got {value!r}") from None
    if not 0 <= share <= 1:
        raise ValueError(f"a share is between 0% and 100%, got {value!r}")
    return share

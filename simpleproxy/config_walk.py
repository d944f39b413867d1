"""The config walker: reading a YAML tree with key paths, and the basic value converters.

A :class:`Section` is one mapping being read; every key it is asked for is
marked, and :meth:`Section.done` reports the rest as unknown, with the
closest known key as a suggestion. Converters raise ``ValueError`` with a
message for a person; the section prefixes it with the key path.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .grammar import is_token
from .units import parse_address, parse_duration, parse_network

T = TypeVar("T")


class Walker:
    def __init__(self, base_dir: Path | None = None) -> None:
        self.problems: list[str] = []
        #: where relative file names in the configuration start: the file's own directory
        self.base_dir = base_dir if base_dir is not None else Path.cwd()

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)


class Section:
    """One mapping being read. Keys that are never asked for are reported as unknown."""

    def __init__(self, walker: Walker, data: object, path: str) -> None:
        self.walker = walker
        self.path = path
        self.taken: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            walker.error(path, f"expected a mapping of keys, got {_kind(data)}")
            data = {}
        self.data: dict = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        self.taken.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except ValueError as exc:
            self.walker.error(self.key(name), str(exc))
            return default

    def optional(self, name: str, reader: Callable[[Section], T]) -> T | None:
        """``reader(section)`` for a sub-mapping that may be absent (None then)."""
        self.taken.add(name)
        return reader(self.section(name)) if name in self.data else None

    def section(self, name: str) -> Section:
        self.taken.add(name)
        return Section(self.walker, self.data.get(name), self.key(name))

    def items(self, name: str) -> Iterator[tuple[str, object]]:
        """``(key path, value)`` for each element of a list (a lone value counts as one)."""
        self.taken.add(name)
        value = self.data.get(name)
        if value is None:
            return
        if not isinstance(value, list):
            value = [value]
        for i, item in enumerate(value):
            yield f"{self.key(name)}[{i}]", item

    def each(self, name: str, convert: Callable[[Any], T]) -> list[T]:
        """Every element of a list through ``convert``, as :meth:`get` does one value: a
        ``ValueError`` is reported at the element's own key and the element left out."""
        found = []
        for where, value in self.items(name):
            try:
                found.append(convert(value))
            except ValueError as exc:
                self.walker.error(where, str(exc))
        return found

    def done(self) -> None:
        for unknown in sorted(set(self.data) - self.taken, key=str):
            hint = did_you_mean(str(unknown), self.taken)
            self.walker.error(self.key(str(unknown)), f"unknown key{hint}")


def did_you_mean(word: str, choices: object) -> str:
    names = sorted(str(c) for c in choices)  # type: ignore[attr-defined]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    close = close or [n for n in names if len(word) >= 3 and (n.startswith(word) or word.startswith(n))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def to_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def int_between(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    return convert


def to_text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {_kind(value)}")
    return value


def to_access_target(value: object) -> str:
    """``stdout``, ``stderr``, ``off`` or a path; YAML reads a bare ``off`` as false."""
    return "off" if value is False else to_text(value)


def one_of(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), choices)}")
        return str(value)

    return convert


def to_positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


def to_statuses(value: object) -> tuple[int, ...]:
    """``[502, 503]``, ``"500-599"`` or a list mixing both -> sorted status codes."""
    items = value if isinstance(value, list) else [value]
    codes: set[int] = set()
    for item in items:
        low, _, high = str(item).partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ValueError(f"expected status codes like 502 or 500-599, got {item!r}")
        first, last = int(low), int(high or low)
        if not 100 <= first <= last <= 599:
            raise ValueError(f"status codes run from 100 to 599, got {item!r}")
        codes.update(range(first, last + 1))
    return tuple(sorted(codes))


def to_readable_file(value: object) -> str:
    path = Path(to_text(value))
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return str(path)


def read_addresses(section: Section, name: str) -> list[tuple[str, int]]:
    addresses = section.each(name, parse_address)
    if section.data.get(name) == []:
        section.walker.error(section.key(name), "give at least one host:port")
    if len(set(addresses)) != len(addresses):
        section.walker.error(section.key(name), "the same address is listed twice")
    return addresses


def network_list(s: Section, key: str) -> tuple[Any, ...]:
    """A list of addresses and CIDR networks (``10.0.0.0/8``, ``::1``), each problem by its key."""
    return tuple(s.each(key, parse_network))


def token_list(s: Section, key: str, what: str, case: Callable[[str], str] = str.lower,
               star: bool = False) -> tuple[str, ...]:
    """A list of tokens (field names, methods, cookie names), each through ``case``; with ``star``,
    a lone ``"*"`` for any."""
    found = []
    for where, value in s.items(key):
        text = str(value).strip()
        if not is_token(text) or (text == "*" and not star):
            s.walker.error(where, f"{value!r} is not {what}")
            continue
        found.append(case(text))
    if "*" in found and len(found) > 1:
        s.walker.error(s.key(key), '"*" stands alone')
    return tuple(found)

"""Translating connection failures: refused is 502, only a timeout is 504."""

from __future__ import annotations

import socket

from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from simpleproxy.errors import UpstreamConnectError, UpstreamTimeout
from simpleproxy.upstream.pool import connect_error


def caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


def test_refused_is_502_even_though_urllib3_makes_it_a_timeout_subclass() -> None:
    conn = HTTPConnection("127.0.0.1", 1)
    refused = caused(NewConnectionError(conn, "refused"), ConnectionRefusedError())
    assert isinstance(refused, ConnectTimeoutError)  # the trap this function exists for
    error = connect_error(refused, "127.0.0.1:1")
    assert type(error) is UpstreamConnectError and error.status == 502
    assert error.detail == "upstream refused the connection" and error.upstream == "127.0.0.1:1"


def test_timeouts_are_504_and_other_failures_502() -> None:
    conn = HTTPConnection("127.0.0.1", 1)
    assert type(connect_error(ConnectTimeoutError(conn, "slow"), "s")) is UpstreamTimeout
    assert type(connect_error(socket.timeout(), "s")) is UpstreamTimeout
    unresolved = connect_error(NameResolutionError("nowhere.invalid", conn, socket.gaierror()), "s")
    assert type(unresolved) is UpstreamConnectError and "resolve" in unresolved.detail
    unreachable = connect_error(caused(NewConnectionError(conn, "x"), OSError(113, "No route")), "s")
    assert unreachable.detail == "cannot connect to upstream"


def test_interrupts_are_not_swallowed() -> None:
    interrupt = KeyboardInterrupt()
    assert connect_error(interrupt, "s") is interrupt

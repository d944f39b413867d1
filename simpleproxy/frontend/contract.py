"""What this package relies on inside waitress, checked before anything is served.

The front end subclasses waitress's channel, request parser and tasks, replaces
three methods of its server, and reads and writes fields waitress keeps for
itself. Little of that is waitress's public API, so a release may rename any
of it: ``setup.py`` pins the range the tests ran on (:data:`TESTED`), and
:func:`check` fails at start-up naming what is missing, where a silently
renamed field would otherwise turn a guard off.

Each entry below is one waitress name and what the front end uses of it:
a field, or a method with the parameters it is called with or overridden by.
A field waitress sets in ``__init__`` has no class attribute to look up, so a
field counts as present when the class defines it or its methods' code names
it (a rename removes it from both). A test imports every waitress name the
package imports and checks it is listed here.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata
from typing import Any, Iterator

from ..errors import WaitressMismatch

#: the waitress releases the tests ran on; setup.py requires the same
TESTED = ">=3.0.2,<3.1"

_CHANNEL = (
    "parser_class", "task_class", "error_task_class",
    "__init__(server, sock, addr, adj, map)", "handle_close()", "handle_read()", "writable()", "received(data)",
    "write_soon(data)", "_flush_some(do_close)", "_flush_exception(flush, do_close)",
    "_flush_outbufs_below_high_watermark()", "del_channel(map)", "close()", "send(data, do_close)",
    "outbufs", "total_outbufs_len", "current_outbuf_count", "outbuf_lock", "will_close", "close_when_flushed",
    "requests", "request", "last_activity", "sendbuf_len", "connected", "adj", "server", "addr", "socket",
)
_TASK = (
    "execute()", "get_environment()", "build_response_header()", "set_close_on_finish()", "write(data)",
    "environ", "request", "channel", "version", "status", "start_time", "has_body", "response_headers",
    "content_length", "close_on_finish", "chunked_response", "wrote_header",
)

#: module -> name -> what of it is used ("field", or "method(parameters after self)")
USED: dict[str, dict[str, tuple[str, ...]]] = {
    "waitress": {"wasyncore": ()},
    "waitress.wasyncore": {
        "dispatcher": ("__init__(sock, map)", "close()", "del_channel(map)", "accepting", "socket", "_map",
                       "_fileno", "readable()", "writable()"),
        "close_all": ("(map, ignore_all)",),
        "poll2": ("(timeout, map)",),
        "loop": ("(timeout, use_poll, map, count)",),
        "readwrite": ("(obj, flags)",),
    },
    "waitress.server": {
        "create_server": ("(application, map)",),
        "BaseWSGIServer": (
            "channel_class", "maintenance(now)", "readable()", "handle_accept()", "add_task(task)",
            "pull_trigger()", "run()", "task_dispatcher", "trigger", "adj", "active_channels", "_map",
            "effective_host", "effective_port", "application", "asyncore",
        ),
    },
    "waitress.trigger": {"trigger": ("pull_trigger(thunk)",)},
    "waitress.channel": {"HTTPChannel": _CHANNEL, "ClientDisconnected": ()},
    "waitress.task": {
        "WSGITask": _TASK,
        "ErrorTask": ("execute()", "set_close_on_finish()", "write(data)", "request", "channel", "version",
                      "status", "response_headers", "content_length"),
        "ThreadedTaskDispatcher": ("set_thread_count(count)", "add_task(task)", "shutdown(cancel_pending, timeout)",
                                   "active_count", "queue"),
    },
    "waitress.parser": {
        "HTTPRequestParser": (
            "__init__(adj)", "received(data)", "parse_header(header_plus)",
            "completed", "headers_finished", "header_plus", "header_bytes_received", "body_bytes_received",
            "error", "headers", "command", "request_uri", "path", "query", "fragment", "version", "first_line",
            "url_scheme", "proxy_scheme", "proxy_netloc", "connection_close", "expect_continue",
            "content_length", "body_rcv", "adj",
        ),
        "ParsingError": (),
        "TransferEncodingNotImplemented": (),
    },
    "waitress.receiver": {"FixedStreamReceiver": ("__init__(cl, buf)",)},
    "waitress.buffers": {"OverflowableBuffer": ("__init__(overflow)",),
                         "TempfileBasedBuffer": ("__init__(from_buffer)", "append(s)", "get(numbytes, skip)",
                                                 "skip(numbytes, allow_prune)", "prune()", "close()"),
                         "ReadOnlyFileBasedBuffer": ()},
    "waitress.utilities": {"Error": ("code", "reason", "body"), "BadRequest": ("code",), "build_http_date": ("(when)",)},
    "waitress.adjustments": {
        "Adjustments": (
            "connection_limit", "outbuf_overflow", "outbuf_high_watermark", "inbuf_overflow", "ident", "url_scheme",
            "recv_bytes", "max_request_header_size", "max_request_body_size",
        ),
    },
}


def _names_in_code(cls: type) -> set[str]:
    """Every name a class or its bases define, or their functions' code mentions."""
    names = set(dir(cls))
    for klass in cls.__mro__:
        for value in vars(klass).values():
            code = getattr(inspect.unwrap(value), "__code__", None) if callable(value) else None
            stack = [code] if code is not None else []
            while stack:
                code = stack.pop()
                names.update(code.co_names)
                stack.extend(const for const in code.co_consts if inspect.iscode(const))
    return names


def _parameters(function: Any) -> tuple[list[str], list[str]]:
    """(the names of ``function``'s parameters, those of them without a default)."""
    named = [p for p in inspect.signature(function).parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return [p.name for p in named], [p.name for p in named if p.default is p.empty]


def _problems_with(module_name: str, name: str, used: tuple[str, ...]) -> Iterator[str]:
    where = f"{module_name}.{name}"
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, name)
    except (ImportError, AttributeError):
        yield f"{where} is gone"
        return
    known = _names_in_code(target) if inspect.isclass(target) else set()
    for use in used:
        attribute, paren, wanted = use.partition("(")
        if paren and not attribute:  # the target itself is called: "(a, b)"
            member = target
        elif not paren:  # a field: defined on the class or named by its code
            if attribute not in known and not hasattr(target, attribute):
                yield f"{where}.{attribute} is gone"
            continue
        else:  # a method: it must really be there
            member = getattr(target, attribute, None)
            if member is None:
                yield f"{where}.{attribute} is gone"
                continue
            if not callable(member):
                yield f"{where}.{attribute} is no longer a method"
                continue
        expected = [p.strip() for p in wanted.rstrip(")").split(",") if p.strip()]
        have, required = _parameters(member)
        if have[:1] == ["self"]:
            have = have[1:]
        # The parameters used, in order, and no new one the calls here would not pass.
        if have[: len(expected)] != expected or set(required) - {"self", *expected}:
            yield f"{where}.{attribute or ''}({', '.join(have)}) where ({', '.join(expected)}) is used"


def problems() -> list[str]:
    """What the installed waitress lacks of :data:`USED`; empty when everything is there."""
    return [problem for module, names in USED.items() for name, used in names.items()
            for problem in _problems_with(module, name, used)]


_checked = False


def check() -> None:
    """Raise :class:`WaitressMismatch` naming what is missing, once per process (tens of milliseconds)."""
    global _checked
    if _checked:
        return
    found = problems()
    if found:
        try:
            version = metadata.version("waitress")
        except metadata.PackageNotFoundError:
            version = "unknown"
        raise WaitressMismatch(
            f"waitress {version} lacks what simpleproxy's front end uses (tested: waitress{TESTED}): "
            + "; ".join(found) + ". Install a waitress in the tested range: pip install 'waitress" + TESTED + "'"
        )
    _checked = True

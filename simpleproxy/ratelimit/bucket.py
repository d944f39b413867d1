"""Token-bucket arithmetic, as GCRA: one number per key, so a decision is one atomic update.

A bucket holds ``burst`` tokens and refills at ``rate`` per second; a request
takes one. GCRA (the generic cell rate algorithm, as in ATM and redis-cell)
keeps, instead of a token count and a time, one *theoretical arrival time*
(TAT): when the bucket would be full again. With ``interval = 1 / rate``:

- the request may pass if ``max(tat, now) - now <= (burst - 1) * interval``
  (the debt it would leave is within the bucket), and then
  ``tat = max(tat, now) + interval``;
- ``wait = max(tat, now) - now`` is how long to hold it to keep exactly to the
  rate (``delay`` mode), and, when refused, ``wait - (burst - 1) * interval``
  is when it would pass (``Retry-After``).

The same function runs in the memory store and, transcribed to Lua, in Redis.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Decision(NamedTuple):
    allowed: bool
    wait: float  #: seconds until this request's slot (0 when the bucket had a token at once)
    retry_after: float  #: when refused: seconds until a request would pass
    remaining: int  #: tokens left after this request
    reset: float  #: seconds until the bucket is full again


def decide(tat: float, now: float, interval: float, burst: int) -> tuple[float, Decision]:
    """-> (the new TAT to store, the decision). Pure: the caller stores the TAT atomically."""
    start = tat if tat > now else now
    wait = start - now
    tolerance = (burst - 1) * interval
    if wait > tolerance + 1e-9:  # a hair of slack for float rounding at the exact edge
        return tat, Decision(False, wait, wait - tolerance, 0, wait)
    new_tat = start + interval
    debt = new_tat - now
    remaining = max(0, math.floor((burst * interval - debt) / interval + 1e-9))
    return new_tat, Decision(True, wait, 0.0, remaining, debt)


def parse_rate(text: str) -> float:
    """``100/s``, ``6000/min``, ``10/m``, ``1/h`` -> requests per second."""
    count, sep, unit = str(text).partition("/")
    units = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
             "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
    try:
        number = float(count)
    except ValueError:
        number = -1.0
    if not sep or unit.strip() not in units or not 0 < number < 1e9:
        raise ValueError(f"expected a rate like 100/s, 6000/min or 10/h, got {text!r}")
    return number / units[unit.strip()]

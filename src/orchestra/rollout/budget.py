"""Budget: a hard dollar cap enforced by reservation, safe to share between concurrent episodes and whole runs.

Before any paid call, the caller reserves the call's worst-case cost; the reservation fails (`BudgetExceeded`) if
spent + reserved + disputed + amount would pass the cap, and nothing is sent. After the call the reservation is
settled with the cost the provider reported. One `Budget` may be shared by every episode of a run (`run_many`'s
`budget`, `orchestra run --budget-usd`); `child` gives an episode its own smaller cap inside it.

The rule, and why (RELIABILITY F10, F13)
- A reservation is a true upper bound *under the request's contract*: the prompt bound assumes only that a token
  covers at least one UTF-8 byte of the rendered request (true of byte-level BPE, of SentencePiece with byte
  fallback, and of every character-level vocabulary) plus a stated template overhead (`backends.base`); the output
  is reserved at `max_tokens`, which the request sends. The HTTP backend enforces the output side itself wherever it
  can: a stream is cut as soon as it has delivered more pieces than `max_tokens` allows, and closing the connection
  stops a real server generating.
- Settlement books `min(reported cost, reservation)` as spend. So `spent_usd <= limit_usd` holds exactly, whatever
  the providers do, and however many episodes share the budget: every reservation passed the cap check, and no
  settlement exceeds its reservation. Amounts are kept as integers of 1e-12 dollars, so the inequality is exact,
  not up to float rounding.
- A provider can only report more than its reservation by breaking the contract (a non-streamed body that ignores
  `max_tokens`, or a prompt counted outside the bound's assumptions). That excess is never hidden and never called
  spend: it is kept in `disputed_usd` (to reconcile with the provider's invoice) and logged, the trajectory keeps
  the provider's full figure on the turn, and disputed money counts against the cap when deciding whether another
  call may start. A misbehaving provider can therefore push `spent + disputed` past the cap only by the excess of the
  calls already in flight when it misbehaved, which no client can prevent for a body generated before it is read.
- A billed failure (a cut stream, a cut body, an expert tool whose stream was cut) is settled with what it was billed,
  like a success; `release` is only for calls never sent.

All methods are synchronous and short, so they are atomic under asyncio; a lock makes them safe from threads too.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from fractions import Fraction

from orchestra.errors import BudgetExceeded

log = logging.getLogger(__name__)

_UNITS_PER_USD = 10**12


@dataclass(frozen=True, slots=True)
class Reservation:
    amount_usd: float
    id: int


class Budget:
    """A dollar cap (`limit_usd`; `math.inf` for none) with reservations. Figures are read as dollars."""

    def __init__(self, limit_usd: float = math.inf):
        if not limit_usd >= 0:
            raise ValueError("budget limit_usd must be >= 0")
        self.limit_usd = limit_usd
        self._limit = None if math.isinf(limit_usd) else _limit_units(limit_usd)
        self._spent = 0
        self._reserved = 0
        self._disputed = 0
        self._open: dict[int, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        """What settled calls cost, each at most its reservation: never more than `limit_usd`."""
        return self._spent / _UNITS_PER_USD

    @property
    def reserved_usd(self) -> float:
        return self._reserved / _UNITS_PER_USD

    @property
    def disputed_usd(self) -> float:
        """What providers reported beyond the reservation of their call (a broken `max_tokens` contract)."""
        return self._disputed / _UNITS_PER_USD

    overrun_usd = disputed_usd

    @property
    def remaining_usd(self) -> float:
        if self._limit is None:
            return math.inf
        return (self._limit - self._spent - self._reserved - self._disputed) / _UNITS_PER_USD

    def reserve(self, amount_usd: float) -> Reservation:
        """Hold `amount_usd` (a worst-case estimate) or raise `BudgetExceeded` without holding anything."""
        amount = _units(amount_usd)
        with self._lock:
            if self._limit is not None and self._spent + self._reserved + self._disputed + amount > self._limit:
                raise BudgetExceeded(
                    f"call needs up to ${amount / _UNITS_PER_USD:.6f} but only "
                    f"${max(0.0, self.remaining_usd):.6f} of ${self.limit_usd:.6f} is left"
                )
            self._next += 1
            self._open[self._next] = amount
            self._reserved += amount
            return Reservation(amount / _UNITS_PER_USD, self._next)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release `reservation` and record the call's reported cost: spend up to the reservation, the rest disputed."""
        actual = _units(actual_usd)
        with self._lock:
            held = self._open.pop(reservation.id, None)
            if held is None:
                raise ValueError("reservation already settled")
            self._reserved -= held
            self._spent += min(actual, held)
            excess = max(0, actual - held)
            self._disputed += excess
        if excess:
            log.warning("a provider reported $%.6f beyond its call's reservation of $%.6f (it ignored the "
                        "request's max_tokens or the prompt bound); recorded as disputed, not spent",
                        excess / _UNITS_PER_USD, held / _UNITS_PER_USD)

    def release(self, reservation: Reservation) -> None:
        """Release a reservation for a call that was never sent (costs nothing)."""
        self.settle(reservation, 0.0)

    def child(self, limit_usd: float) -> Budget:
        """A per-episode budget whose reservations also count against this one."""
        return _ChildBudget(self, limit_usd)


class _ChildBudget(Budget):
    def __init__(self, parent: Budget, limit_usd: float):
        super().__init__(limit_usd)
        self._parent = parent
        self._parent_res: dict[int, Reservation] = {}

    def reserve(self, amount_usd: float) -> Reservation:
        mine = super().reserve(amount_usd)
        try:
            self._parent_res[mine.id] = self._parent.reserve(amount_usd)
        except BudgetExceeded:
            Budget.settle(self, mine, 0.0)
            raise
        return mine

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        super().settle(reservation, actual_usd)
        self._parent.settle(self._parent_res.pop(reservation.id), actual_usd)


def _units(usd: float) -> int:
    """Dollars -> integer units of 1e-12 dollars (nearest): reservations and settlements round alike."""
    if not usd > 0:
        return 0
    if math.isinf(usd):
        raise ValueError("a cost cannot be infinite")
    return round(Fraction(usd) * _UNITS_PER_USD)


def _limit_units(usd: float) -> int:
    """The cap in units, never read back as more than `usd` (so `spent_usd <= limit_usd` holds as floats too)."""
    units = _units(usd)
    while units > 0 and units / _UNITS_PER_USD > usd:
        units -= 1
    return units

"""Budget: a hard dollar cap enforced by reservation, safe to share between concurrent episodes.

Before any paid call, the caller reserves the call's worst-case cost; the reservation fails (`BudgetExceeded`) if
spent + reserved + amount would pass the cap, and nothing is sent. After the call the reservation is settled with the
actual cost. Since every settlement is at most its reservation when estimates are worst-case, spend can never pass
the cap, however many episodes share the budget. A call that turns out dearer than its estimate is still recorded at
its real cost (money is never hidden), and the overrun is kept in `overrun_usd` so a bad estimator is visible.

All methods are synchronous and short, so they are atomic under asyncio; a lock makes them safe from threads too.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from orchestra.errors import BudgetExceeded


@dataclass(frozen=True, slots=True)
class Reservation:
    amount_usd: float
    id: int


class Budget:
    """A dollar cap (`limit_usd`; `math.inf` for none) with reservations."""

    def __init__(self, limit_usd: float = math.inf):
        if limit_usd < 0:
            raise ValueError("budget limit_usd must be >= 0")
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.overrun_usd = 0.0
        self._open: dict[int, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    @property
    def remaining_usd(self) -> float:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    def reserve(self, amount_usd: float) -> Reservation:
        """Hold `amount_usd` (a worst-case estimate) or raise `BudgetExceeded` without holding anything."""
        amount = max(0.0, float(amount_usd))
        with self._lock:
            if self.spent_usd + self.reserved_usd + amount > self.limit_usd + 1e-12:
                raise BudgetExceeded(
                    f"call needs up to ${amount:.6f} but only ${max(0.0, self.remaining_usd):.6f} "
                    f"of ${self.limit_usd:.6f} is left"
                )
            self._next += 1
            self._open[self._next] = amount
            self.reserved_usd += amount
            return Reservation(amount, self._next)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release `reservation` and record the call's real cost."""
        with self._lock:
            held = self._open.pop(reservation.id, None)
            if held is None:
                raise ValueError("reservation already settled")
            self.reserved_usd -= held
            if self.reserved_usd < 1e-15:
                self.reserved_usd = 0.0
            self.spent_usd += actual_usd
            self.overrun_usd += max(0.0, actual_usd - held)

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

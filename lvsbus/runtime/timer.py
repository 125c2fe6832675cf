"""A service's timer, pure: which deadline of its core is armed, and which ``timer.fired`` it may
publish. No clock here: the engine (``lvsbus.runtime.engine``) sets an asyncio timer and the
simulator (``tools/simulate.py``) queues a simulated one, both as this says.

* ``arm(deadline)``: after every step the core's ``next_deadline``; True when the timer must be
  set again (the old one cancelled; none set for None), False when that deadline is armed already.
* ``fire(deadline)``: the timer went off; True to publish ``timer.fired`` for it, False for the
  deadline published last: a core whose deadline went D, E, D again (E not reached) while the
  ``timer.fired`` of D was on its way gets one, not two.

A new one for each run of the service (its first deadline is armed and published afresh).
"""
from __future__ import annotations


class TimerState:
    __slots__ = ("armed", "published")

    def __init__(self) -> None:
        self.armed: int | None = None  # the deadline the timer is set for (it stays once fired)
        self.published: int | None = None  # the last deadline a timer.fired was published for

    def arm(self, deadline: int | None) -> bool:
        if deadline == self.armed:
            return False
        self.armed = deadline
        return True

    def fire(self, deadline: int) -> bool:
        if deadline == self.published:
            return False
        self.published = deadline
        return True

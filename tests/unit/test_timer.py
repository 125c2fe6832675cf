"""The runtime's timer decisions (lvsbus/runtime/timer.py), which the engine and the simulator both follow."""
from lvsbus.runtime.timer import TimerState


def test_arm_sets_the_timer_only_for_a_new_deadline():
    t = TimerState()
    assert t.arm(None) is False  # nothing armed, nothing asked
    assert t.arm(100) is True
    assert t.arm(100) is False  # armed already: the timer set stays
    assert t.arm(None) is True  # cancelled
    assert t.arm(100) is True


def test_a_deadline_is_not_published_twice_in_a_row():
    t = TimerState()
    t.arm(100)
    assert t.fire(100) is True
    t.arm(200)  # the core moved on before the timer.fired of 100 reached it...
    t.arm(100)  # ... and back: the new timer for 100 goes off at once
    assert t.fire(100) is False
    t.arm(200)
    assert t.fire(200) is True
    t.arm(100)
    assert t.fire(100) is True  # 200 came in between: 100 again is a new timer.fired

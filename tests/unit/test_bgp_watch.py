"""The bgp shell's watch of BIRD (services/bgp/watch.py): when a BIRD that died or did not start is
started again, and when a running one that stopped answering is called hung. Time is an argument."""
from lvsbus_services.bgp.watch import HUNG_S, MAX_BACKOFF_S, SpeakerWatch


def test_a_bird_that_keeps_dying_is_started_again_after_1_2_4_s_at_most_30():
    w = SpeakerWatch()
    waits, now = [], 100.0
    for _ in range(7):
        waits.append(w.not_running(now))
        assert not w.start_due(now + waits[-1] - 0.01) and w.start_due(now + waits[-1])
        now += waits[-1]
    assert waits == [1, 2, 4, 8, 16, MAX_BACKOFF_S, MAX_BACKOFF_S]


def test_an_answered_poll_starts_the_backoff_again_at_1_s():
    w = SpeakerWatch()
    for _ in range(4):
        w.not_running(0.0)
    w.started()
    assert w.backoff == 16  # a start alone is no proof: it may die again at once
    w.answered()
    assert w.not_running(50.0) == 1


def test_a_running_bird_silent_for_hung_s_from_the_first_unanswered_poll_is_hung():
    w = SpeakerWatch()
    assert w.unanswered(asked=10.0, now=10.5) is None
    assert w.unanswered(asked=15.0, now=10.0 + HUNG_S - 0.1) is None  # counted from the first poll
    assert w.unanswered(asked=19.0, now=10.0 + HUNG_S) == HUNG_S
    assert w.unanswered(asked=21.0, now=21.5) is None  # after the verdict the silence starts over


def test_an_answer_between_silent_polls_clears_the_silence():
    w = SpeakerWatch()
    w.unanswered(asked=0.0, now=1.0)
    w.answered()
    assert w.unanswered(asked=9.0, now=HUNG_S + 0.5) is None

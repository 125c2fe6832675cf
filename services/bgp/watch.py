"""When the bgp shell starts BIRD again, and when it calls a running BIRD hung. Pure: time (monotonic
seconds) is an argument; the shell (services/bgp/shell.py) does the starting, polling and killing.

A BIRD that did not start, or died, is started again after a backoff: 1 s, then 2, 4, ... at most
30 s, back to 1 s once a started BIRD has answered a poll. A BIRD that runs but has not answered its
control socket for ``hung_s`` since the first unanswered poll is hung: the shell stops it, and it is
started again at the next poll, like one that died.
"""
from __future__ import annotations

from dataclasses import dataclass

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
#: a BIRD that runs but has not answered on its control socket for this long is hung: stopped
#: (SIGKILL after 1 s) and started again like one that died
HUNG_S = 10.0


@dataclass
class SpeakerWatch:
    hung_s: float = HUNG_S
    backoff: float = FIRST_BACKOFF_S
    restart_at: float = 0.0  # no start before this
    silent_since: float | None = None  # the first unanswered poll of a running BIRD

    def not_running(self, now: float) -> float:
        """A start failed, or a started BIRD died: the next start is due after the backoff, which
        doubles. Returns the wait."""
        wait = self.backoff
        self.restart_at = now + wait
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
        return wait

    def start_due(self, now: float) -> bool:
        return now >= self.restart_at

    def started(self) -> None:
        self.silent_since = None

    def answered(self) -> None:
        """A poll of a running BIRD was answered: it is well, the backoff starts again at 1 s."""
        self.silent_since = None
        self.backoff = FIRST_BACKOFF_S

    def unanswered(self, asked: float, now: float) -> float | None:
        """A poll asked at ``asked`` got no answer by ``now``: the seconds BIRD has been silent if
        that makes it hung (the silence then starts over), else None."""
        if self.silent_since is None:
            self.silent_since = asked
        silent = now - self.silent_since
        if silent >= self.hung_s:
            self.silent_since = None
            return silent
        return None

"""The BIRD driver's control-socket handling without BIRD (services/bgp/speaker.py): a BIRD that
hangs is an error after the timeout, never a hang of the bgp shell; BIRD's reply codes decide
whether a route set was taken. (Real BIRD processes: tests/netns/test_bgp_netns.py.)"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from lvsbus_services.bgp.speaker import BgpSettings, BirdControl, BirdSpeaker, Route, SpeakerError

HELLO = b"0001 BIRD 2.0.12 ready.\n"


class FakeBird:
    """A Unix socket that greets (or not) and answers every command line with ``reply``."""

    def __init__(self, path: str, reply: bytes | None, hello: bool = True) -> None:
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.reply, self.hello = reply, hello
        self.conns: list[socket.socket] = []
        self.commands: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)  # kept open: a hanging BIRD does not close either
            if not self.hello:
                continue
            c.sendall(HELLO)
            f = c.makefile("rb")
            self.commands.append(f.readline().decode().strip())
            if self.reply is not None:
                c.sendall(self.reply)

    def close(self) -> None:
        self.srv.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def fake(tmp_path):
    made: list[FakeBird] = []

    def make(reply: bytes | None, hello: bool = True) -> tuple[str, FakeBird]:
        path = str(tmp_path / f"bird{len(made)}.ctl")
        made.append(FakeBird(path, reply, hello))
        return path, made[-1]

    yield make
    for f in made:
        f.close()


@pytest.mark.parametrize("hello", [False, True])
def test_a_bird_that_hangs_is_an_error_after_the_timeout(fake, hello):
    path, _ = fake(None, hello=hello)
    t0 = time.monotonic()
    with pytest.raises(SpeakerError, match="timed out"):
        BirdControl(path, timeout=0.3).command("show protocols")
    assert time.monotonic() - t0 < 2.0


def test_no_bird_at_all_is_an_error(tmp_path):
    with pytest.raises(SpeakerError, match="BIRD control socket"):
        BirdControl(str(tmp_path / "none.ctl")).command("show status")


def test_an_error_code_is_refused_with_birds_words(fake):
    path, bird = fake(b"8002 Unknown command\n")
    with pytest.raises(SpeakerError, match="BIRD refused 'bogus': Unknown command"):
        BirdControl(path).check("bogus")
    assert bird.commands == ["bogus"]


def _speaker(tmp_path, path: str) -> BirdSpeaker:
    return BirdSpeaker(BgpSettings(router_id="10.99.1.11", local_as=65001, peer_as=65000, peers=("10.99.1.100",)),
                       tmp_path / "bgp", path)


@pytest.mark.parametrize("reply, taken", [
    (b"0002-Reading configuration from /x/bird.conf\n0003 Reconfigured\n", True),
    (b"0002-Reading configuration from /x/bird.conf\n0004 Reconfiguration in progress\n", True),
    (b"0002-Reading configuration from /x/bird.conf\n0005 Reconfiguration already in progress, queueing\n", True),
    (b"0002-Reading configuration from /x/bird.conf\n0006 Reconfiguration ignored, shutting down\n", False),
    (b"0002-Reading configuration from /x/bird.conf\n8002 /x/routes.conf:3:9 syntax error\n", False),
])
def test_set_routes_is_taken_only_when_bird_reconfigures(fake, tmp_path, reply, taken):
    path, bird = fake(reply)
    sp = _speaker(tmp_path, path)
    sp.dir.mkdir()
    routes = [Route("10.200.0.1", 32, "drain")]
    if taken:
        sp.set_routes(routes)
    else:
        with pytest.raises(SpeakerError):
            sp.set_routes(routes)
    assert bird.commands == ["configure"]
    assert "route 10.200.0.1/32 blackhole { bgp_community.add((65535,0)); };" in sp.routes_file.read_text()

"""lvs.cf (Piranha) texts for the config and nanny tests."""
from __future__ import annotations

#: the smallest lvs.cf head: the primary router's address
BASE = "primary = 10.0.0.1\n"

#: a DNS query for example.org A, ID 0xbeef (a byte above 0x7f: not UTF-8), RD set
DNS_QUERY = (b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03org\x00\x00\x01\x00\x01")


def escaped(data: bytes) -> str:
    """``data`` as lvs.cf send/expect escapes, every byte escaped: octal and hex forms alternating."""
    return "".join(f"\\x{b:02x}" if i % 2 else f"\\{b:03o}" for i, b in enumerate(data))  # both forms


def dns_cf(send: str, expect: str = "", extra: str = "") -> str:
    """An lvs.cf with one UDP virtual server on port 53 (10.0.0.5) whose check sends ``send`` and
    expects ``expect`` (as written in the file), ``extra`` lines added to the virtual block."""
    return (BASE + "virtual dns {\n address = 10.0.0.5 eth0\n port = 53\n protocol = udp\n"
            f" send = \"{send}\"\n" + (f" expect = \"{expect}\"\n" if expect else "") + extra +
            " server s {\n address = 10.0.0.6\n }\n}\n")

"""The routers of a scale-out group compared (lvsbus/config/consistency.py; docs/scaleout.md
"Configuration"): each kind of difference is an error at the file and line of the item, naming the
other file and its line; identical routers, and routers that differ only in names, pass."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lvsbus.config import loads
from lvsbus.config.consistency import compare_routers, service_key_text
from lvsbus.host.configfiles import load_config
from tests.helpers.lvs_config import ROUTERS, scaleout_toml

HEAD = "".join(f'[router.{n}]\naddress = "{a}"\npriority = {p}\n' for n, a, p in ROUTERS)
SYNC = '\n[sync_daemon]\nenabled = true\ninterface = "eth0"\n'

WEB = """
[virtual.web]
address = "10.200.0.1"
scheduler = "mh"
scheduler_flags = ["mh-port"]
forwarding = "direct"
[virtual.web.server.s1]
address = "10.99.3.101"
[virtual.web.server.s2]
address = "10.99.3.102"
weight = 2
"""
#: the same with a scheduler that is not consistent (allowed with connection sync)
WLC = WEB.replace('scheduler = "mh"\nscheduler_flags = ["mh-port"]', 'scheduler = "wlc"')

#: lines the tests find the numbers of
L_ADDRESS_10_200_0_1 = 'address = "10.200.0.1"'
L_ADDRESS_10_200_0_2 = 'address = "10.200.0.2"'
L_FORWARDING_DIRECT = 'forwarding = "direct"'
L_FORWARDING_TUNNEL = 'forwarding = "tunnel"'
L_SCHEDULER_FLAGS_MH_PORT = 'scheduler_flags = ["mh-port"]'
L_SCHEDULER_MH = 'scheduler = "mh"'
L_SCHEDULER_WLC = 'scheduler = "wlc"'


def text(services: str = WEB, *, scaleout: bool = True, extra: str = "", **so) -> str:
    return HEAD + (scaleout_toml(**so) if scaleout else "") + extra + services


def load(body: str, name: str, locations: bool = True):
    return loads(body, name, locations=locations)


def compare(*bodies: str):
    """The issues comparing the bodies, loaded as r1.toml, r2.toml...; as strings."""
    result = compare_routers([load(b, f"r{i}.toml") for i, b in enumerate(bodies, 1)])
    assert result.compared
    return [str(i) for i in result.issues]


def line_of(body: str, line: str, after: str = "") -> int:
    """The 1-based number of the first line ``line`` (after the line ``after``, if given)."""
    lines = body.split("\n")
    start = lines.index(after) if after else 0
    return lines.index(line, start) + 1


def test_identical_routers_pass():
    assert compare(text(), text(), text()) == []


def test_names_may_differ_services_are_matched_by_their_key():
    renamed = WEB.replace("virtual.web", "virtual.www").replace("server.s1", "server.a").replace("server.s2", "server.b")
    assert compare(text(), text(renamed)) == []


def test_the_same_file_twice_passes_and_one_file_is_not_compared():
    loaded = load(text(), "r1.toml")
    assert compare_routers([loaded, loaded]).issues == ()
    assert not compare_routers([loaded]).compared


def test_files_without_scaleout_are_not_compared():
    plain, other = text(WLC, scaleout=False), text(WLC.replace("weight = 2", "weight = 3"), scaleout=False)
    result = compare_routers([load(plain, "a.toml"), load(other, "b.toml")])
    assert (result.compared, result.issues) == (False, ())


def test_a_file_without_scaleout_beside_one_with_is_an_error_naming_both():
    with_so, without = text(), text(scaleout=False)
    [issue] = compare(with_so, without)
    assert issue.startswith("r2.toml: no [scaleout], but r1.toml:")
    assert f"r1.toml:{line_of(with_so, '[scaleout]')} has it" in issue
    [issue] = compare(without, with_so)
    assert issue.startswith(f"r2.toml:{line_of(with_so, '[scaleout]')}: scaleout: [scaleout] here, none in r1.toml")


def test_local_as_must_be_the_same():
    b = text(local_as=65002)
    [issue] = compare(text(), b)
    assert issue.startswith(f"r2.toml:{line_of(b, 'local_as = 65002')}: scaleout.local_as: 65002 here, 65001 in "
                            f"r1.toml:{line_of(text(), 'local_as = 65001')}")


def test_a_weight_that_differs_names_both_files_and_lines():
    a, b = text(), text(WEB.replace("weight = 2", "weight = 3"))
    [issue] = compare(a, b)
    assert issue == (f"r2.toml:{line_of(b, 'weight = 3')}: virtual.web.server.s2.weight: real server "
                     f"10.99.3.102:80: weight 3 here, 2 in r1.toml:{line_of(a, 'weight = 2')}: mh sends a flow "
                     "to the same real server on every router only when the weights are the same")


def test_a_real_server_missing_or_extra():
    a = text()
    b = text(WEB.replace('[virtual.web.server.s2]\naddress = "10.99.3.102"\nweight = 2\n', ""))
    [issue] = compare(a, b)
    assert issue.startswith(f"r2.toml:{line_of(b, '[virtual.web]')}: virtual.web: real server 10.99.3.102:80 "
                            f"(s2 at r1.toml:{line_of(a, '[virtual.web.server.s2]')}) is not in this virtual service")
    [issue] = compare(b, a)  # the other way: the extra server, at its own line
    assert issue.startswith(f"r2.toml:{line_of(a, '[virtual.web.server.s2]')}: virtual.web.server.s2: real server "
                            f"10.99.3.102:80 is not in r1.toml's web (r1.toml:{line_of(b, '[virtual.web]')})")


def test_a_real_server_inactive_on_one_router_is_missing_there():
    b = text(WEB.replace("weight = 2", "weight = 2\nactive = false"))
    [issue] = compare(text(), b)
    assert "real server 10.99.3.102:80" in issue and "is not in this virtual service" in issue
    assert f"(inactive at r2.toml:{line_of(b, '[virtual.web.server.s2]')})" in issue


def test_a_real_server_port_is_part_of_its_identity():
    b = text(WEB.replace('address = "10.99.3.102"', 'address = "10.99.3.102"\nport = 8080'))
    issues = compare(text(), b)
    assert len(issues) == 2
    assert "real server 10.99.3.102:80 " in issues[0] and "real server 10.99.3.102:8080 is not in" in issues[1]


def test_the_order_of_the_real_servers_counts_for_mh():
    swapped = WEB.replace('[virtual.web.server.s1]\naddress = "10.99.3.101"\n', "") \
        + '[virtual.web.server.s1]\naddress = "10.99.3.101"\n'
    a, b = text(), text(swapped)
    [issue] = compare(a, b)
    assert issue.startswith(f"r2.toml:{line_of(b, '[virtual.web]')}: virtual.web: the real servers are in another "
                            f"order than in r1.toml:{line_of(a, '[virtual.web]')}: number 1 is 10.99.3.102:80 here, "
                            "10.99.3.101:80 there (IPVS mh fills its lookup table in the order")


def test_the_order_does_not_count_for_a_scheduler_that_does_not_hash():
    swapped = WLC.replace('[virtual.web.server.s1]\naddress = "10.99.3.101"\n', "") \
        + '[virtual.web.server.s1]\naddress = "10.99.3.101"\n'
    assert compare(text(WLC, extra=SYNC), text(swapped, extra=SYNC)) == []


def test_the_scheduler_its_flags_and_the_forwarding_method():
    a, b = text(extra=SYNC), text(WLC, extra=SYNC)
    issues = compare(a, b)
    assert issues[0].startswith(f"r2.toml:{line_of(b, L_SCHEDULER_WLC)}: virtual.web.scheduler: wlc here, mh in "
                                f"r1.toml:{line_of(a, L_SCHEDULER_MH)}: every router must send a flow")
    assert issues[1].startswith(f"r2.toml:{line_of(b, '[virtual.web]')}: virtual.web.scheduler_flags: scheduler "
                                f"flags none here, mh-port in r1.toml:{line_of(a, L_SCHEDULER_FLAGS_MH_PORT)}")
    assert len(issues) == 2  # mh's order is not compared against wlc

    b = text(WEB.replace('scheduler_flags = ["mh-port"]', 'scheduler_flags = ["mh-port", "mh-fallback"]'))
    [issue] = compare(text(), b)
    assert "scheduler flags mh-fallback, mh-port here, mh-port in r1.toml" in issue

    b = text(WEB.replace('forwarding = "direct"', 'forwarding = "tunnel"'))
    [issue] = compare(text(), b)
    assert issue.startswith(f"r2.toml:{line_of(b, L_FORWARDING_TUNNEL)}: virtual.web.forwarding: tunnel here, "
                            f"direct in r1.toml:{line_of(text(), L_FORWARDING_DIRECT)}")


def test_a_virtual_service_on_one_router_only():
    dns = ('\n[virtual.dns]\naddress = "10.200.0.53"\nport = 53\nprotocol = "udp"\nscheduler = "mh"\n'
           'forwarding = "direct"\n[virtual.dns.server.d1]\naddress = "10.99.3.111"\nport = 53\n')
    a, b = text(WEB + dns), text()
    [issue] = compare(a, b)  # at the service, in the file that has it; its VIP is not reported again
    assert issue.startswith(f"r1.toml:{line_of(a, '[virtual.dns]')}: virtual.dns: udp:10.200.0.53:53 is not a "
                            "virtual service of r2.toml: every router")
    [issue] = compare(b, a)
    assert issue.startswith(f"r2.toml:{line_of(a, '[virtual.dns]')}: virtual.dns: udp:10.200.0.53:53 is not a "
                            "virtual service of r1.toml")


def test_another_port_is_another_virtual_service():
    b = text(WEB.replace('forwarding = "direct"', 'forwarding = "direct"\nport = 8080'))
    issues = compare(text(), b)
    assert [i.split(": ")[2].split(" ")[0] for i in issues] == ["tcp:10.200.0.1:80", "tcp:10.200.0.1:8080"]


def test_an_inactive_virtual_service_is_missing_and_says_so():
    b = text(WEB.replace('forwarding = "direct"', 'forwarding = "direct"\nactive = false'))
    [issue] = compare(text(), b)
    assert f"is not a virtual service of r2.toml (inactive at r2.toml:{line_of(b, '[virtual.web]')})" in issue


def test_a_fwmark_service_s_vip_is_compared():
    mark = WEB.replace('forwarding = "direct"', 'forwarding = "direct"\nfwmark = 7')
    a, b = text(mark), text(mark.replace("10.200.0.1", "10.200.0.2"))
    assert service_key_text(load(a, "a.toml").config.virtual_services[0]) == "fwm:inet:7"
    issues = compare(a, b)
    assert issues == [
        f"r1.toml:{line_of(a, L_ADDRESS_10_200_0_1)}: virtual.web.address: VIP 10.200.0.1 is held here and "
        "not by r2.toml's router: every router announces and holds the same VIPs",
        f"r2.toml:{line_of(b, L_ADDRESS_10_200_0_2)}: virtual.web.address: VIP 10.200.0.2 is held here and "
        "not by r1.toml's router: every router announces and holds the same VIPs",
    ]


def test_every_file_is_compared_with_the_first():
    c = text(WEB.replace("weight = 2", "weight = 5"))
    issues = compare(text(), text(), c)
    assert len(issues) == 1 and issues[0].startswith("r3.toml:")


def test_every_difference_is_reported_not_only_the_first():
    b = text(WEB.replace("weight = 2", "weight = 3").replace('forwarding = "direct"', 'forwarding = "tunnel"'),
             local_as=65009)
    assert [i.split(": ")[1] for i in compare(text(), b)] == [
        "scaleout.local_as", "virtual.web.forwarding", "virtual.web.server.s2.weight"]


@pytest.mark.parametrize("locations", [False, True])
def test_lines_only_when_the_file_was_loaded_with_its_locations(locations):
    a = load(text(), "a.toml", locations=locations)
    b = load(text(WEB.replace("weight = 2", "weight = 3")), "b.toml", locations=locations)
    assert (a.locate is not None) is locations  # kept only when asked: no line index held for nothing
    [issue] = compare_routers([a, b]).issues
    assert (issue.file, issue.line is not None) == ("b.toml", locations)
    assert bool(re.search(r" in a\.toml:\d", issue.message)) is locations and " in a.toml" in issue.message


def test_every_reader_keeps_its_line_index_when_asked():
    """What the comparison places its issues with, from each reader (lvs.cf, keepalived.conf with
    its includes, TOML): the line of the key, else of its block."""
    fixtures = Path(__file__).parents[1] / "fixtures"
    cf = str(fixtures / "lvscf" / "nat_router.cf")
    loaded = load_config(cf, locations=True)
    assert loaded.locate is not None
    assert loaded.locate("virtual.http") == (cf, 21)
    assert loaded.locate("virtual.http.server.app1.weight") == (cf, 35)
    ka = load_config(str(fixtures / "keepalived-pair" / "keepalived.conf"), locations=True)
    assert ka.locate is not None
    included = str(fixtures / "keepalived-pair" / "conf.d" / "web.conf")
    assert ka.locate("virtual.vs1") == (included, 1)  # the file the include brought in
    assert ka.locate("virtual.vs1.server.rs1.weight") == (included, 10)
    assert load_config(cf).locate is None

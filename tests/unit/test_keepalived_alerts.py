"""keepalived.conf's alerts (docs/keepalived.md, docs/alerts.md): global_defs' notification_email,
notification_email_from, smtp_server [PORT], smtp_helo_name, smtp_connect_timeout, smtp_alert
(global, _vrrp, _checker, and per vrrp_instance / sync group / virtual_server / real_server),
router_id, notify_fifo / vrrp_notify_fifo / lvs_notify_fifo map onto [alerts]; what is not run is a
warning with its line; bad values are errors with theirs; convert writes [alerts] back."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, loads, loads_toml, render_toml

INSTANCE = """
vrrp_instance WEB {
    interface eth0
    priority 150
    unicast_src_ip 10.0.0.1
    unicast_peer { 10.0.0.2 }
    virtual_ipaddress { 192.0.2.10/24 }
    %s
}
virtual_server 192.0.2.10 80 {
    lb_kind DR
    %s
    real_server 10.1.0.11 80 {
        %s
        TCP_CHECK { connect_timeout 2 }
    }
    real_server 10.1.0.12 80 {
        TCP_CHECK { connect_timeout 2 }
    }
}
"""


def conf(global_defs: str, inst: str = "", vs: str = "", rs: str = "") -> str:
    return "global_defs {\n" + global_defs + "\n}\n" + INSTANCE % (inst, vs, rs)


def load(text: str):
    return loads(text, "/etc/keepalived/keepalived.conf", format="keepalived")


def warnings(loaded) -> list[str]:
    return [str(w) for w in loaded.warnings]


MAIL = """   router_id LVS_A
   notification_email {
      ops@example.org
      noc@example.org
   }
   notification_email_from lvs@example.org
   smtp_server 192.0.2.25 2525
   smtp_helo_name lvs-a.example.org
   smtp_connect_timeout 20
"""


def test_global_defs_map_onto_alerts_and_convert_writes_them_back():
    loaded = load(conf(MAIL + "   smtp_alert\n   notify_fifo /run/keepalived.fifo\n"))
    al = loaded.config.alerts
    assert al is not None
    assert (al.email, al.email_from, al.smtp_server, al.smtp_port, al.smtp_helo_name, al.smtp_timeout, al.router_id) == (
        ("ops@example.org", "noc@example.org"), "lvs@example.org", "192.0.2.25", 2525, "lvs-a.example.org", 20.0, "LVS_A")
    assert al.on == ("role", "real_server", "virtual_service") and al.notify_fifo == "/run/keepalived.fifo"
    assert al.mail == () and al.no_mail == ()
    shown = warnings(loaded)
    assert not any("sends no mail" in w or "notification_email:" in w or "smtp_server:" in w for w in shown), shown
    assert any(":2: router_id: the [ID] of every alert's subject" in w for w in shown), shown
    assert loads_toml(render_toml(loaded.config)).config == loaded.config


def test_keepalived_s_default_is_no_mail_smtp_alert_turns_it_on_where_given():
    loaded = load(conf(MAIL, inst="smtp_alert", vs="smtp_alert", rs="smtp_alert false"))
    al = loaded.config.alerts
    assert al.on == ()  # no global smtp_alert: keepalived mails nothing by default
    assert al.mail == ("group:WEB", "virtual:vs1") and al.no_mail == ("server:vs1/rs1",)
    loaded = load(conf(MAIL + "   smtp_alert_vrrp on\n   smtp_alert_checker off\n   smtp_alert yes\n"))
    assert loaded.config.alerts.on == ("role",)  # _vrrp and _checker win over smtp_alert
    loaded = load(conf(MAIL + "   smtp_alert\n   smtp_alert_vrrp false\n"))
    assert loaded.config.alerts.on == ("real_server", "virtual_service")


def test_fifos_without_mail_and_what_is_not_run():
    loaded = load(conf("   vrrp_notify_fifo /run/vrrp.fifo\n   lvs_notify_fifo /run/lvs.fifo root root\n"
                       "   notify_fifo_script /usr/local/bin/reader\n   no_email_faults\n"))
    al = loaded.config.alerts
    assert (al.notify_fifo, al.role_notify_fifo, al.lvs_notify_fifo, al.email, al.smtp_server) == (
        None, "/run/vrrp.fifo", "/run/lvs.fifo", (), None)
    shown = warnings(loaded)
    assert any(":3: lvs_notify_fifo: the FIFO lvsbus makes is root's" in w for w in shown), shown
    assert any(":4: notify_fifo_script: lvsbus writes the FIFO and does not start its reader" in w for w in shown)
    assert any(":5: no_email_faults:" in w for w in shown)


def test_no_relay_or_no_recipient_sends_nothing_as_keepalived():
    loaded = load(conf("   notification_email { ops@example.org }\n", inst="smtp_alert"))
    assert loaded.config.alerts is None
    shown = warnings(loaded)
    assert any(":2: notification_email without smtp_server: no mail is sent" in w for w in shown), shown
    assert any("smtp_alert: no mail relay and recipients" in w for w in shown), shown
    loaded = load(conf("   smtp_server 127.0.0.1\n"))
    assert loaded.config.alerts is None
    assert any(":2: smtp_server without notification_email" in w for w in warnings(loaded))


def test_bad_values_are_errors_with_their_lines():
    with pytest.raises(ConfigError) as e:
        load(conf("   notification_email {\n      not-an-address\n   }\n   smtp_server 127.0.0.1 99999\n"
                  "   smtp_connect_timeout soon\n   notify_fifo relative.fifo\n", inst="smtp_alert maybe"))
    text = str(e.value)
    assert "keepalived.conf:6: 'smtp_connect_timeout': 'soon' is not a number" in text, text
    assert "keepalived.conf:2: alerts.email: 'not-an-address' (item 1) is not a mail address" in text, text
    assert "keepalived.conf:5: alerts.smtp_port: 99999 is out of range: must be 1..65535" in text, text
    assert "keepalived.conf:7: alerts.notify_fifo: 'relative.fifo' must be the absolute path of a FIFO" in text, text
    assert "smtp_alert: 'maybe' is not true or false" in text, text


CHECKER_COMMANDS = """
virtual_server 192.0.2.80 80 {
    lb_kind DR
    alpha
    omega
    quorum 2
    quorum_up "/usr/local/bin/vs-up web"
    quorum_down /usr/local/bin/vs-down root
    real_server 10.0.0.11 80 {
        uthreshold 100
        lthreshold 10
        notify_up "/bin/logger up"
        notify_down /bin/rs-down
        TCP_CHECK {
        }
    }
}
"""


def test_checker_commands_alpha_omega_and_thresholds_map_onto_the_model():
    loaded = loads(CHECKER_COMMANDS, "keepalived.conf", format="keepalived")
    (vs,) = loaded.config.virtual_services
    assert (vs.quorum_up, vs.quorum_down, vs.alpha, vs.omega) == ("/usr/local/bin/vs-up web", "/usr/local/bin/vs-down",
                                                                  True, True)
    (rs,) = vs.servers
    assert (rs.notify_up, rs.notify_down, rs.upper_threshold, rs.lower_threshold) == ("/bin/logger up", "/bin/rs-down", 100, 10)
    assert loaded.config.alerts_wanted() is True  # the alerts service runs them, no [alerts] needed
    (warn,) = [w for w in loaded.warnings if "quorum_down" in w.message]
    assert warn.line == 8 and "'root'" in warn.message
    assert not [w for w in loaded.warnings if "ignored" in w.message]

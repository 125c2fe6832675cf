"""alerts: keepalived's mail alerts and notify FIFO lines (docs/alerts.md).

* effects of the alerts core (what to send, in keepalived's words, decided from the bus):
  ``alerts.send_mail`` (one mail, with the relay's settings) and ``alerts.write_fifo`` (one line
  for the notify FIFOs it goes to), ``alerts.run_command`` (a notify_up, notify_down, quorum_up or
  quorum_down command);
* decision: ``alerts.config_rejected``;
* observation, published by the alerts shell: ``alerts.mail_result`` (a mail was sent, failed, or
  was dropped because the queue of mails waiting for the relay was full) and
  ``alerts.command_finished``. No core acts on them: status, metrics and the timeline read them
  from the log.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Enum, Float, Int, List, Nullable, Str

KIND = Enum("role", "real_server", "virtual_service",
            doc="what the alert is about: a failover group's role, a real server's verdict, a virtual service's quorum")
ADDRESS = Str(max_len=320, min_len=3, doc="a mail address, local@domain")

declare(
    "alerts.send_mail", 1,
    {
        "id": Int(min=1, doc="this core's mails, counted from 1 (the shell's alerts.mail_result names it)"),
        "kind": KIND,
        "server": Str(max_len=253, min_len=1, doc="the mail relay: an address or a host name ([alerts] smtp_server)"),
        "port": Int(min=1, max=65535),
        "helo": Nullable(Str(max_len=253, min_len=1), doc="the name said in HELO; None: the host's name"),
        "timeout": Float(min=0.1, max=3600, doc="seconds each step of the exchange with the relay may take"),
        "from": Nullable(ADDRESS, doc="the sender; None: lvsbus@ and the host's name"),
        "to": List(ADDRESS, max_items=100, doc="the recipients"),
        "subject": Str(max_len=1024, min_len=1, doc="as keepalived writes it: [ROUTER_ID] VRRP Instance GROUP - "
                                                    "Entering MASTER state, ..."),
        "body": Str(max_len=1024, doc="as keepalived writes it: => VRRP Instance is now owning VRRP VIPs <=, ..."),
        "queue": Int(min=1, max=100000, doc="mails that may wait for the relay; one more is dropped"),
    },
    doc="Send one alert mail (keepalived's smtp_alert). The shell queues it and returns at once; a "
    "sender thread talks to the relay, so a slow or dead relay never holds the bus.",
)
declare(
    "alerts.write_fifo", 1,
    {
        "paths": List(Str(max_len=4096, min_len=2), max_items=2, doc="the FIFOs this line goes to"),
        "line": Str(max_len=1024, min_len=1, doc='keepalived\'s notify FIFO line, without its newline: INSTANCE "GROUP" '
                                                  "MASTER 100, GROUP \"SYNC\" BACKUP 0, RS [ADDR]:tcp:PORT [VIP]:tcp:PORT "
                                                  "DOWN, VS [VIP]:tcp:PORT UP"),
        "kind": Enum("role", "lvs", doc="role: an INSTANCE or GROUP line; lvs: an RS or VS line"),
    },
    doc="Write one line to the notify FIFOs (opened non-blocking: no reader and a full pipe drop the line, "
    "counted in the shell's log).",
)
declare(
    "alerts.mail_result", 1,
    {
        "id": Int(min=1, doc="the alerts.send_mail it is about"),
        "outcome": Enum("sent", "failed", "dropped",
                        doc="sent: the relay took it; failed: the relay refused it or could not be reached in "
                            "time; dropped: the queue of mails waiting was full"),
        "error": Str(max_len=512, doc="why not sent (empty when sent)"),
        "seconds": Float(min=0, doc="from queueing to the outcome"),
        "dropped": Int(min=0, doc="mails dropped so far by this shell (queue full)"),
    },
    doc="What became of one alert mail (the alerts shell's observation).",
)
COMMAND_KIND = Enum("notify_up", "notify_down", "quorum_up", "quorum_down",
                    doc="keepalived's keyword: a real server's verdict, a virtual service's quorum")
declare(
    "alerts.run_command", 1,
    {
        "id": Int(min=1, doc="this core's commands, counted from 1 (alerts.command_finished names it)"),
        "kind": COMMAND_KIND,
        "command": Str(max_len=4096, min_len=1, doc="run by /bin/sh, as the alerts service's user"),
        "virtual": Str(max_len=64, min_len=1, doc="the virtual service"),
        "server": Nullable(Str(max_len=64, min_len=1), doc="the real server (None for quorum_up / quorum_down)"),
        "timeout_ms": Int(min=1, doc="killed (its process group) when still running after this"),
    },
    doc="Run a checker notify command (keepalived's notify_up, notify_down, quorum_up, quorum_down) in the "
    "background; its environment names the virtual service, the server and the kind.",
)
declare(
    "alerts.command_finished", 1,
    {
        "id": Int(min=1, doc="the alerts.run_command it is about"),
        "kind": COMMAND_KIND,
        "exit_code": Nullable(Int(), doc="None when it could not run or was killed at its timeout"),
        "duration_ms": Int(min=0),
        "error": Str(max_len=1024, doc="empty when it ran to its end; otherwise why not (not found, timed out...)"),
    },
    doc="A checker notify command the alerts shell ran has finished (the shell's observation).",
)
declare(
    "alerts.config_rejected", 1,
    {"error": Str(max_len=1024), "count": Int(min=1)},
    doc="The alerts core could not use a config.loaded payload; the previous settings stay.",
)

"""nanny: health of real servers. One health machine per (virtual service, real server).

* observation, published by nanny's shell: ``health.check_results`` (a batch of check outcomes,
  columnar, every ~50 ms or every N results: 10,000 checks/s are ~20 events/s, not 10,000);
* decisions of nanny's core: ``health.failover_changed`` (a failover service's machine, service = fos);
  ``health.track_changed`` (a tracked script's machine); ``health.real_server_up``, ``health.real_server_down`` (the verdicts
  lvsd acts on), ``health.weight_changed`` (a dynamic weight) and ``health.state_changed`` (every other change of the machine: RISING, FALLING,
  INIT, DISABLED). See docs/nanny-lvsd.md.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Dict, Enum, Int, List, Nullable, Str

NAME = Str(max_len=64, min_len=1)
CHECK_ID = Str(max_len=160, min_len=3, doc="VIRTUAL/SERVER: the virtual service's and the real server's names")
STATE = Enum("INIT", "RISING", "UP", "FALLING", "DOWN", "DISABLED", doc="the health machine's state")
#: why one check failed (or ``ok``); stable, for alerting and tests
DETAIL = Enum(
    "ok",  # passed
    "refused",  # connection refused (RST), or ICMP port unreachable (udp)
    "timeout",  # no verdict within the check's total timeout (silent or trickling server)
    "reset",  # the connection was reset or closed before the reply was complete
    "unreachable",  # no route, host or network unreachable
    "bad_status",  # http(s): a status code not in the expected list; smtp: not 220/250; dns: not NOERROR
    "bad_body",  # http(s): the body does not match body_regex
    "no_match",  # tcp_send_expect / udp / program: the reply or output lacks `expect`
    "bad_response",  # http(s): not a well-formed HTTP response; smtp/dns/file: not a reply or number
    "exit_code",  # program: a wrong exit status
    "tls_error",  # https: the TLS handshake failed
    "error",  # any other local error (out of sockets, program not found...)
    "bad_digest",  # http(s): the body's MD5 is not the url's digest
    "nonzero",  # file: the file holds a number other than 0
    doc="outcome of one check",
)
REASON = Enum(
    "checks_passed",  # rise checks in a row passed
    "checks_failed",  # fall checks in a row failed
    "first_check_failed",  # INIT or RISING: a failed check is a verdict at once
    "first_check_passed",  # INIT/DOWN -> RISING
    "check_failing",  # UP -> FALLING
    "check_recovered",  # FALLING -> UP (back before fall was reached)
    "disabled",  # the config made the server (or its virtual service) inactive
    "enabled",  # DISABLED -> INIT
    "check_changed",  # a reload changed the check (or the server's address/port): start over
    "added",  # a reload added the server
    doc="why the health machine moved",
)

declare(
    "health.check_results", 1,
    {
        "digest": Str(max_len=128, doc="the config (config.loaded digest) the shell scheduled these checks under"),
        "ids": List(CHECK_ID, max_items=20000, doc="which check, one per result"),
        "ok": List(Bool(), max_items=20000, doc="passed or not, same order"),
        "latency_us": List(Int(min=0), max_items=20000, doc="time from the check's start to its verdict"),
        "detail": List(DETAIL, max_items=20000),
        "late_us": Int(min=0, doc="the largest lateness of a check start in this batch against its schedule"),
        "weights": Dict(Int(min=-(2**31), max=2**31 - 1), max_items=20000,
                        doc="check id -> what its check said of the weight: a program with dynamic_weight "
                            "(keepalived's misc_dynamic) the weight, exit status minus 2; a file check with a "
                            "file_weight the file's number times it (added to the configured weight); only "
                            "the checks that gave one, absent when none did"),
    },
    optional=("weights",),
    doc="A batch of check outcomes, in the order the checks finished (nanny's shell, every ~50 ms or N results).",
)

_SERVER = {
    "virtual": NAME,
    "server": NAME,
    "address": Str(max_len=64, min_len=2),
    "port": Int(min=0, max=65535, doc="the port IPVS forwards to"),
}

declare(
    "health.weight_changed", 1,
    {
        **_SERVER,
        "weight": Nullable(Int(min=0, max=65535),
                           doc="the weight its check gave (a program's) or made (a file's number times its "
                               "file_weight plus the configured weight); None: back to the configured one"),
        "previous": Nullable(Int(min=0, max=65535)),
    },
    doc="A check set a real server's weight (keepalived's misc_dynamic, a FILE_CHECK's weight); lvsd "
    "programs it in place of the configured one while the server is in service.",
)
declare(
    "health.real_server_up", 1,
    {
        **_SERVER,
        "reason": REASON,
        "previous": STATE,
        "passes": Int(min=0, doc="checks passed in a row"),
        "detail": DETAIL,
    },
    doc="A real server is UP: it may take connections of that virtual service.",
)
declare(
    "health.real_server_down", 1,
    {
        **_SERVER,
        "reason": REASON,
        "previous": STATE,
        "failures": Int(min=0, doc="checks failed in a row"),
        "detail": DETAIL,
    },
    doc="A real server is DOWN: it must not take new connections of that virtual service.",
)
declare(
    "health.state_changed", 1,
    {
        **_SERVER,
        "old": Nullable(STATE, doc="None when the machine was just created"),
        "new": STATE,
        "reason": REASON,
        "detail": Nullable(DETAIL),
    },
    doc="A health machine moved to a state other than UP or DOWN (RISING, FALLING, INIT, DISABLED).",
)
declare(
    "health.config_rejected", 1,
    {"error": Str(max_len=1024), "count": Int(min=1)},
    doc="nanny's core could not use a config.loaded payload; the previous checks stay.",
)

declare(
    "health.failover_changed", 1,
    {
        "service": NAME,
        "address": Str(max_len=64, min_len=2),
        "port": Int(min=0, max=65535),
        "old": Nullable(STATE, doc="None when the machine was just created"),
        "new": STATE,
        "reason": REASON,
        "detail": Nullable(DETAIL, doc="the last check's outcome"),
        "count": Int(min=0, doc="checks passed (new UP/RISING) or failed (DOWN/FALLING) in a row"),
    },
    doc="A failover service's health machine moved (service = fos: nanny checks address:port every "
    "keepalive; DOWN after timeout seconds unreachable). pulse gives up the active role on DOWN.",
)
declare(
    "health.track_changed", 1,
    {
        "track": Str(max_len=64, min_len=1, doc="the tracked script's name ([track.NAME], kind = script)"),
        "old": Nullable(STATE, doc="None when the machine was just created"),
        "new": STATE,
        "reason": REASON,
        "detail": Nullable(DETAIL, doc="the last run's outcome"),
        "count": Int(min=0, doc="runs passed (new UP/RISING) or failed (DOWN/FALLING) in a row"),
    },
    doc="A tracked script's machine moved: nanny runs it every interval (its exit status 0 passes, "
    "timeout fails); rise passes in a row make it UP, fall failures DOWN. pulse counts it failed while "
    "DOWN or RISING (docs/pulse.md, tracking).",
)

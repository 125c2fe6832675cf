"""Run nanny's checks (services/nanny/checks.py) from wherever this runs (a router's namespace):
``python -m tests.helpers.run_checks JSON`` where JSON is ``[[address, port, {check fields}], ...]``
(the fields as given, or as ``dataclasses.asdict`` of a loaded config's Check gives them);
prints ``[[ok, detail], ...]`` as JSON, and which ICMP socket a ping would open."""
from __future__ import annotations

import asyncio
import json
import sys

from lvsbus.config.model import Check, CheckKind, HttpUrl
from lvsbus_services.nanny.checks import icmp_socket, run_check


async def main(items: list) -> list:
    out = []
    for address, port, fields in items:
        if fields.get("urls"):  # dataclasses.asdict made dicts of them, JSON lists of the status tuples
            fields["urls"] = tuple(HttpUrl(**{**u, "status": tuple(u["status"])}) for u in fields["urls"])
        for name in ("status",):
            if isinstance(fields.get(name), list):
                fields[name] = tuple(fields[name])
        c = Check(**{**fields, "kind": CheckKind(fields["kind"])})
        out.append(list(await run_check(address, port, c)))
    return out


if __name__ == "__main__":
    sock, raw = icmp_socket(False)
    sock.close()
    print(json.dumps({"results": asyncio.run(main(json.loads(sys.argv[1]))), "raw_icmp": raw}))

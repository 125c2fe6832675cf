"""``python -m lvsbus_tools.web --state-dir DIR --config FILE --run-start-seq N [--config-seq M]``

The router starts the console when the config in force has a ``[web]`` section (docs/console.md);
it follows the bus from the run's start and serves the section's address.
"""
from __future__ import annotations

import structlog

from lvsbus.host import logs
from lvsbus.runtime.engine import service_arguments, service_config

from .auth import PasswdError, read_passwd
from .main import run

log = structlog.get_logger("lvsbus.web")


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("web", "web: the router's console", package="lvsbus_tools").parse_args(argv)
    logs.setup(service="web")
    accepted = service_config("web", args)
    if accepted is None:
        return 2
    web = accepted.config.web
    if web is None:
        log.info("web_not_configured")
        return 0
    try:
        read_passwd(web.password_file)
    except PasswdError as exc:  # said, and the console serves nobody until the file is right (a reload)
        log.error("web_passwd_unusable", error=str(exc))
    node = (accepted.payload or {}).get("local_router", "")
    return run(args.state_dir, args.run_start_seq, web.address, web.password_file, web.tls_cert, web.tls_key, node=node)


if __name__ == "__main__":
    raise SystemExit(main())

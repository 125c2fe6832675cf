"""``lvsbus web`` (the console alone on a router's state directory) and ``lvsbus web passwd``."""
from __future__ import annotations

import argparse
import getpass
import os.path
import sys

import re

from lvsbus.host.argtypes import existing_dir, existing_file, file_to_write
from lvsbus.host.paths import DEFAULT_STATE_DIR

DEFAULT_PASSWD = "/etc/lvsbus/web.passwd"


def user_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):  # auth.USER_RE (argon2 is imported only to run)
        raise argparse.ArgumentTypeError(f"{text!r} is not a user name: 1-64 letters, digits, '_', '.' or '-'")
    return text


def add_commands(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "web",
        help="the web console (alone on a state directory; the router starts it itself with [web])",
        description="Serve the web console of the router whose state directory is given: a live overview "
        "(role, peers, VIPs, virtual services and real servers with health, weights, connections and "
        "rates) and the operator actions, behind a login (docs/console.md). The address, TLS files and "
        "password file are those of the [web] section of the config in force (the last config.loaded in "
        "the log), each overridden by its option. `lvsbus web passwd` manages the users.",
    )
    w.add_argument("--state-dir", type=existing_dir, help=f"the router's state directory (default {DEFAULT_STATE_DIR})")
    w.add_argument("--address", help="HOST:PORT to listen on (default: [web] address, or 127.0.0.1:9540)")
    w.add_argument("--password-file", type=existing_file, help=f"the users (default: [web] password_file, or {DEFAULT_PASSWD})")
    w.add_argument("--tls-cert", type=existing_file, help="serve HTTPS with this certificate (PEM; with --tls-key)")
    w.add_argument("--tls-key", type=existing_file, help="and this private key (PEM)")
    w.set_defaults(func=cmd_web)
    ws = w.add_subparsers(dest="web_cmd", metavar="ACTION")
    p = ws.add_parser(
        "passwd",
        help="add a console user, change a password or role, or remove a user",
        description="Set USER's password (asked twice on a terminal, else one line read from standard input) "
        "and role in the console's password file, stored as an argon2id hash, never in plain; the file "
        "is written atomically with mode 0600.",
    )
    p.add_argument("user", type=user_name, help="the user name: 1-64 letters, digits, '_', '.' or '-'")
    p.add_argument("--file", default=DEFAULT_PASSWD, type=file_to_write, help="the password file (default %(default)s; made if missing)")
    p.add_argument("--role", choices=("viewer", "admin"), default="viewer",
                   help="viewer: sees everything; admin: also drains, disables, enables, hands over (default %(default)s)")
    p.add_argument("--delete", action="store_true", help="remove USER instead")
    p.set_defaults(func=cmd_passwd)


def cmd_passwd(args) -> int:
    from . import auth

    try:
        if args.delete:
            if not auth.remove_user(args.file, args.user):
                print(f"lvsbus web passwd: no user {args.user!r} in {args.file}", file=sys.stderr)
                return 1
            print(f"{args.file}: {args.user} removed")
            return 0
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.user}: ")
            if getpass.getpass("again: ") != password:
                print("lvsbus web passwd: the two passwords differ", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            print("lvsbus web passwd: a password needs at least 8 characters", file=sys.stderr)
            return 1
        auth.set_password(args.file, args.user, args.role, password)
    except (auth.PasswdError, OSError) as exc:
        print(f"lvsbus web passwd: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {args.user} ({args.role}) set")
    return 0


def cmd_web(args) -> int:
    from lvsbus.host import logs
    from lvsbus.config import from_dict
    from lvsbus.config.model import Web
    from lvsbus.router.status import read_status

    from . import auth
    from .main import run

    logs.setup(service="web")
    if args.state_dir is None:
        args.state_dir = DEFAULT_STATE_DIR
        if not os.path.isdir(args.state_dir):
            print(f"lvsbus web: {args.state_dir}: no such directory (--state-dir?)", file=sys.stderr)
            return 1
    try:
        status = read_status(args.state_dir)
    except (OSError, ValueError) as exc:
        print(f"lvsbus web: {args.state_dir}: {exc}", file=sys.stderr)
        return 1
    if status["run_start_seq"] is None:
        print(f"lvsbus web: no router run in {args.state_dir}/log (no config.loaded)", file=sys.stderr)
        return 1
    web = _web_in_force(args.state_dir, status["run_start_seq"], from_dict) or Web()
    address = args.address or web.address
    cert, key = (args.tls_cert, args.tls_key) if args.tls_cert or args.tls_key else (web.tls_cert, web.tls_key)
    if (cert is None) != (key is None):
        print("lvsbus web: TLS needs both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    passwd = args.password_file or web.password_file
    try:
        auth.read_passwd(passwd)
    except auth.PasswdError as exc:
        print(f"lvsbus web: {exc}", file=sys.stderr)
        return 1
    return run(args.state_dir, status["run_start_seq"], address, passwd, cert, key, node=status["router"] or "",
               router_pid=status["supervisor_pid"])


def _web_in_force(state_dir: str, run_start: int, from_dict):
    """The [web] section of the last config.loaded of the run (None: no section)."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import decodable
    from lvsbus.log import LogReader
    from lvsbus.host.paths import StateDirs

    last = None
    for ev in decodable(LogReader(StateDirs(state_dir).log, skip_corrupt=True).read(run_start), []):
        if ev.type == "config.loaded":
            last = ev.payload["model"]
    return from_dict(last).web if last is not None else None

"""The host's side of reading a config: the file system a keepalived.conf's includes read
(lvsbus/config/kagrammar.Files) and the config id its ``@ID`` lines match. ``load_config`` is what
every process uses to read its config file (the readers in lvsbus/config/ do no I/O of their own
beyond the file itself)."""
from __future__ import annotations

import glob
import os
import socket

from lvsbus.config import LoadedConfig, load
from lvsbus.config.model import MAX_CONFIG_BYTES

#: keepalived's ``-i``: what ``@ID`` lines of a keepalived.conf match
CONFIG_ID_ENV = "LVSBUS_CONFIG_ID"
#: a keepalived.conf's heartbeat key file (it has no keyword for one; default /etc/lvsbus/heartbeat.key)
KEY_FILE_ENV = "LVSBUS_HEARTBEAT_KEY_FILE"


class HostFiles:
    """kagrammar.Files on this host's file system."""

    def read(self, path: str) -> str:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES:,} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")  # keepalived reads bytes: a comment in Latin-1 must not stop it

    def glob(self, pattern: str) -> list[str]:
        found = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        return [f for f in found if os.path.isfile(f)]

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def env(self, name: str) -> str:
        return os.environ.get(name, "")


def config_id() -> str:
    """``$LVSBUS_CONFIG_ID``, else keepalived's default: the host name up to its first dot."""
    return os.environ.get(CONFIG_ID_ENV) or socket.gethostname().split(".", 1)[0]


def load_config(path: str, format: str | None = None, *, locations: bool = False) -> LoadedConfig:
    """``lvsbus.config.load`` with this host's files and config id (a keepalived.conf's includes and
    ``@ID`` lines; relative includes are relative to the file's directory). ``locations``: keep
    the file's line index (``LoadedConfig.locate``)."""
    return load(str(path), format, files=HostFiles(), config_id=config_id(),
                key_file=os.environ.get(KEY_FILE_ENV) or None, locations=locations)

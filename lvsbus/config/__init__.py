"""lvsbus configuration: one immutable settings model, read from Piranha's lvs.cf or native TOML.

    from lvsbus.config import load
    loaded = load("/etc/sysconfig/ha/lvs.cf")     # LoadedConfig: .config, .warnings, .source
    cfg = loaded.config

Nothing here does I/O at import time, and only ``load`` touches the file system (builtin ``open``):
pure cores may import this package and ``lvsbus.config.model``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
from collections.abc import Iterator

from lvsbus.config.diff import ConfigDiff, RealServerChange, VirtualServiceChange, diff
from lvsbus.config.kagrammar import Files
from lvsbus.config.keepalived import loads_keepalived, looks_like_keepalived
from lvsbus.config.lvscf import loads_lvscf
from lvsbus.config.model import (
    MAX_CONFIG_BYTES,
    SCHEDULERS,
    Check,
    CheckKind,
    HttpUrl,
    Config,
    ConfigError,
    FailoverService,
    Forwarding,
    Heartbeat,
    IpvsTimeouts,
    Issue,
    LoadedConfig,
    NatRouter,
    Notify,
    Protocol,
    RealServer,
    Router,
    ServiceType,
    Severity,
    SyncDaemon,
    Track,
    TrackKind,
    VirtualService,
    check_port,
    effective_check,
    identify_local_router,
    server_port,
    size_issue,
    to_dict,
    too_big_issue,
)
from lvsbus.config.native import from_dict, loads_toml, render_toml
from lvsbus.config.validate import validate

__all__ = [
    "SCHEDULERS", "Check", "CheckKind", "HttpUrl", "Config", "ConfigDiff", "ConfigError", "FailoverService",
    "Forwarding", "Heartbeat", "IpvsTimeouts", "Issue", "LoadedConfig", "NatRouter", "Notify",
    "Protocol", "RealServer", "RealServerChange", "Router", "ServiceType", "Severity", "SyncDaemon",
    "Track", "TrackKind",
    "VirtualService", "VirtualServiceChange", "check_port", "detect_format", "diff",
    "effective_check", "from_dict", "identify_local_router", "load", "loads", "loads_lvscf",
    "loads_toml", "render_toml", "server_port", "to_dict", "validate",
]


def detect_format(path: str, text: str) -> str:
    """``"toml"`` for a ``.toml`` file, ``"lvscf"`` for ``.cf``; otherwise by content: a block only
    keepalived has (``vrrp_instance``, ``virtual_server``, ``global_defs``...) means keepalived.conf,
    a TOML table header (``[virtual.x]``, ``[heartbeat]``...) or a quoted value means TOML, an
    lvs.cf block (``virtual NAME {``) or a bare value means lvs.cf."""
    lower = path.lower()
    if lower.endswith(".toml"):
        return "toml"
    if lower.endswith(".cf"):
        return "lvscf"
    if looks_like_keepalived(text):
        return "keepalived"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            return "toml"
        if line.endswith("{"):
            return "lvscf"
        if "=" in line:
            value = line.split("=", 1)[1].strip()
            if value[:1] in ('"', "[", "{") or value in ("true", "false"):
                return "toml"
    return "lvscf"


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a config is read: a large config makes some
    hundred thousand objects that form no cycles, and the collector's passes over them were a third
    of the load time of bench/keepalived_load.py (1,000 virtual servers x 10 real servers).
    Reference counting still frees everything; the collector resumes as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def loads(text: str, filename: str = "<config>", format: str | None = None, *, files: Files | None = None,
          config_id: str = "", key_file: str | None = None, locations: bool = False) -> LoadedConfig:
    """Parse and validate config text in any form (``format``: "toml", "lvscf", "keepalived" or None
    to detect). A keepalived.conf's includes are read through ``files`` (none: an include is an
    error), its ``@ID`` lines match ``config_id``, ``key_file`` is its heartbeat key (it has no
    keyword for one); lvsbus/host/configfiles.py gives the host's. ``locations``: keep the reader's
    line index (``LoadedConfig.locate``), dropped otherwise."""
    too_big = size_issue(text, filename)
    if too_big is not None:
        raise ConfigError([too_big])
    fmt = format or detect_format(filename, text)
    with _no_cyclic_gc():
        if fmt == "keepalived":
            loaded = loads_keepalived(text, filename, config_id, files, key_file)
        else:
            loaded = loads_toml(text, filename) if fmt == "toml" else loads_lvscf(text, filename)
    return dataclasses.replace(loaded, digest=hashlib.sha256(
        text.encode("utf-8", "surrogatepass")).hexdigest(), locate=loaded.locate if locations else None)


def load(path: str, format: str | None = None, *, files: Files | None = None, config_id: str = "",
         key_file: str | None = None, locations: bool = False) -> LoadedConfig:
    """Read, parse and validate a config file (``.toml`` -> native, else lvs.cf unless the content is
    TOML). Raises ConfigError (every error, with file and line); an unreadable file, a directory
    and a file over MAX_CONFIG_BYTES are ConfigErrors too. ``locations``: as ``loads``."""
    path = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError([Issue(key="", message="is a directory, not a config file",
                                 file=path)]) from None
    except OSError as exc:
        raise ConfigError([Issue(key="", message=f"cannot read the file: {exc.strerror or exc}",
                                 file=path)]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([too_big_issue(raw[:MAX_CONFIG_BYTES].count(b"\n") + 1, path)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Issue(key="", message="the file is not UTF-8 text", file=path,
                                 line=line)]) from None
    loaded = loads(text, path, format, files=files, config_id=config_id, key_file=key_file, locations=locations)
    return dataclasses.replace(loaded, digest=hashlib.sha256(raw).hexdigest())

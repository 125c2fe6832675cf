"""The console's configuration page: the accepted config, a checked editor, the diff, apply.

* ``check(text, path, fmt, running)``: what ``check-config`` says of an edited text (errors and
  warnings with their lines), the model diff against the config in force, and the text diff.
* Applying writes the file with ``lvsbus.host.files.write_atomically`` (a temporary file in the same
  directory, fsynced, renamed over the file, its mode kept, the directory fsynced: a reader sees the
  old text or the new, never a part), then SIGHUP to the router (its supervisor), exactly what an operator's
  ``kill -HUP`` does; the router validates again and records ``config.loaded`` or
  ``config.reload_refused`` (then the console puts the previous text back).
"""
from __future__ import annotations

import difflib
import hashlib

from lvsbus.config import ConfigError, Severity, diff, from_dict, loads


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check(text: str, path: str, fmt: str | None, running_model: dict | None) -> dict:
    def issue(i) -> dict:
        return {"line": i.line, "key": i.key, "message": i.message, "suggestion": i.suggestion, "text": str(i)}

    try:
        loaded = loads(text, path, fmt)
    except ConfigError as exc:
        return {"ok": False, "errors": [issue(i) for i in exc.issues if i.severity is Severity.ERROR],
                "warnings": [issue(i) for i in exc.issues if i.severity is not Severity.ERROR], "diff": []}
    changes: list[str] = []
    if running_model is not None:
        try:
            changes = diff(from_dict(running_model), loaded.config).lines()
        except (ConfigError, KeyError, TypeError, ValueError):
            changes = ["(the config in force could not be compared)"]
    return {"ok": True, "errors": [], "warnings": [issue(i) for i in loaded.warnings], "diff": changes,
            "digest": digest(text)}


def text_diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (on disk)",
                                        f"{path} (edited)"))



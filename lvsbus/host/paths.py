"""Where a router keeps its state: one directory, laid out the same everywhere."""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_STATE_DIR = "/var/lib/lvsbus"


@dataclass(frozen=True)
class StateDirs:
    root: str

    @property
    def run(self) -> str:
        """ipc sockets; 0700 so that only root reaches the bus."""
        return os.path.join(self.root, "run")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "log")

    @property
    def snapshots(self) -> str:
        return os.path.join(self.root, "snapshots")

    def make(self) -> "StateDirs":
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        for d in (self.run, self.log, self.snapshots):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(self.run, 0o700)
        return self

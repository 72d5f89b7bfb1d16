"""The test-run ledger: every run on a test log or test seeds, appended with the code's commit and
the configuration's hash, so a reader can see that nothing was chosen on the test data (a result
is the first run at its commit and config hash; later runs are repeats, never a better pick)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["append", "code_commit", "config_hash"]


def code_commit(root: Path) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the configuration as canonical JSON (sorted keys), first 16 hex digits."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def append(ledger: Path, root: Path, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Append one run (UTC time, commit, config hash, config, result) as a JSON line; return it."""
    entry = {"utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": code_commit(root),
             "config_hash": config_hash(config), "config": config, "result": result}
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True, default=float) + "\n")
    return entry

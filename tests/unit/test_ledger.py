"""The test-run ledger: every run appended with the commit and the configuration's hash."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent_service.lab import ledger


def test_every_run_is_appended_with_commit_and_config_hash(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                                         "--allow-empty", "-m", "x"]):
        subprocess.run(cmd, cwd=repo, check=True)
    book = tmp_path / "ledgers" / "x.jsonl"
    a = ledger.append(book, repo, {"seed": 0, "c0": [0.03125]}, {"clicks": 78})
    b = ledger.append(book, repo, {"c0": [0.03125], "seed": 0}, {"clicks": 79})
    c = ledger.append(book, repo, {"seed": 1, "c0": [0.03125]}, {"clicks": 80})
    lines = [json.loads(x) for x in book.read_text().splitlines()]
    assert [x["result"]["clicks"] for x in lines] == [78, 79, 80]  # nothing overwritten or dropped
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]  # key order does not matter
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert a["commit"] == head
    (repo / "f").write_text("x")
    subprocess.run(["git", "add", "f"], cwd=repo, check=True)
    assert ledger.code_commit(repo) == head + "+dirty"
    assert ledger.code_commit(tmp_path / "nowhere") == "unknown"

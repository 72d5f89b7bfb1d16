"""Code size and repetition of a checkout: non-blank Python lines of the product tree and the pairs
`duplicates` reports, for the whole repository and for product code alone.

Product code is ``agent_service``, ``stream_apps`` and ``simulators`` (not ``tests`` or ``bench``).
The files counted are those git tracks, so two checkouts (e.g. two ``git worktree add --detach``)
compare like with like. A product pair is a row of the whole-repository run whose both sides lie in
the product tree. Needs the ``duplicates`` command on PATH.

Last stdout line: one JSON object. Usage: ``python bench/code_size.py [--repo DIR]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PRODUCT = ("agent_service", "stream_apps", "simulators")
ROW = re.compile(r"^D\d+ (\S+?):\d+-\d+ ~ (\S+?):\d+-\d+")


def product_lines(repo: Path) -> dict[str, int]:
    """Non-blank lines of the tracked ``.py`` files under each product top."""
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "--", *PRODUCT],
                           check=True, capture_output=True, text=True).stdout.split()
    out = dict.fromkeys(PRODUCT, 0)
    for f in files:
        if f.endswith(".py"):
            text = (repo / f).read_text(encoding="utf-8")
            out[f.split("/", 1)[0]] += sum(1 for line in text.splitlines() if line.strip())
    return out


def duplicate_pairs(repo: Path) -> tuple[int, int]:
    """(pairs in the whole repository, pairs with both sides in product code)."""
    res = subprocess.run(["duplicates", "--repo", str(repo), "--most", "200", "--seconds", "300"],
                         check=True, capture_output=True, text=True).stdout
    rows = [m.groups() for m in map(ROW.match, res.splitlines()) if m]
    head = res.splitlines()[0]
    if "incomplete" in res or not (head.startswith(f"{len(rows)} pairs") or head.startswith("no duplicates")):
        sys.exit(f"duplicates output not fully listed: {head}")
    product = sum(1 for a, b in rows if a.split("/", 1)[0] in PRODUCT and b.split("/", 1)[0] in PRODUCT)
    return len(rows), product


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    repo = args.repo.resolve()
    lines = product_lines(repo)
    total, product = duplicate_pairs(repo)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    for k, v in lines.items():
        print(f"{k:15s} {v:7d} non-blank lines", file=sys.stderr)
    print(f"product total   {sum(lines.values()):7d}; duplicates: {total} pairs, {product} in product code",
          file=sys.stderr)
    print(json.dumps({"commit": commit, "product_lines": sum(lines.values()), "lines": lines,
                      "pairs": total, "product_pairs": product}))


if __name__ == "__main__":
    main()

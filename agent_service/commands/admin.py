"""``gaelp admin``: admin actions on a running ``gaelp serve`` (model rollback, budget)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

HELP = "admin actions on a running service: roll back the model, set a budget (token from the environment)"
DESCRIPTION = """\
Call an admin action of a running `gaelp serve` over HTTP. The bearer token is read from the
environment variable GAELP_ADMIN_TOKEN only (never from the command line, where it would
show in the process list and shell history).

  gaelp admin rollback --url http://127.0.0.1:8080
      mark the served model's weights bad and serve the newest earlier good version
      (a second rollback goes further back; it never returns to a version rolled back from)
  gaelp admin budget --url http://127.0.0.1:8080 --daily-usd 250 [--period DAY]
      set a day's budget (UTC day number; default today); spend and reservations are kept
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["rollback", "budget"], help="what to do")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the service")
    p.add_argument("--daily-usd", type=float, default=None, help="budget: the day's budget in USD")
    p.add_argument("--period", type=int, default=None, help="budget: UTC day number (default: today)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")


def run(args: argparse.Namespace) -> int:
    from agent_service.errors import ConfigError

    token = os.environ.get("GAELP_ADMIN_TOKEN")
    if not token:
        raise ConfigError("GAELP_ADMIN_TOKEN", "set the service's admin token in the environment")
    body: dict[str, object] = {}
    if args.action == "budget":
        if args.daily_usd is None:
            raise ConfigError("--daily-usd", "budget needs --daily-usd")
        body["daily_usd"] = args.daily_usd
        if args.period is not None:
            body["period"] = args.period
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/admin/{args.action}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:  # noqa: S310 (operator-given URL)
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"gaelp admin {args.action}: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"gaelp admin {args.action}: cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1

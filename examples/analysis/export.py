#!/usr/bin/env python3
"""Export one of a running gateway's logs through its admin API, as JSON lines.

    python3 examples/analysis/export.py --admin http://127.0.0.1:9090 \\
        --token-file data/admin.token --log events > events.jsonl
    python3 examples/analysis/export.py ... --log decisions > decisions.jsonl

Pages through `GET /admin/export?log=LOG&from=N&limit=M` (the gateway keeps serving: nothing
needs stopping) from `--from` (default 0), each page starting at the previous answer's
`Pulse-Next-Position`, until an answer says `Pulse-End: true`. Prints the records as the
gateway gives them (one JSON object per line, each with its schema version `"v"`), and the
position to continue from on stderr (`next position: N`): run again with `--from N` to tail the
log. The token: `--token`, else `--token-file`, else the environment's `PULSE_ADMIN_TOKEN`.
Only the standard library is used.
"""

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def pages(admin, token, log, start, limit, timeout=30):
    """Yields (body bytes, next position) for each page, from `start` until the end."""
    position = start
    while True:
        query = urllib.parse.urlencode({"log": log, "from": position, "limit": limit})
        request = urllib.request.Request(
            f"{admin.rstrip('/')}/admin/export?{query}",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body = resp.read()
                following = int(resp.headers["Pulse-Next-Position"])
                end = resp.headers.get("Pulse-End", "true").lower() == "true"
        except urllib.error.HTTPError as e:
            raise SystemExit(f"export {log} from {position}: {e.code} {e.read().decode(errors='replace')}")
        yield body, following
        if end:
            return
        if following <= position:
            raise SystemExit(f"export {log}: the gateway did not move past position {position}")
        position = following


def token_of(args):
    if args.token:
        return args.token
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip()
    token = os.environ.get("PULSE_ADMIN_TOKEN")
    if not token:
        raise SystemExit("no admin token: --token, --token-file or PULSE_ADMIN_TOKEN")
    return token


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", default="http://127.0.0.1:9090", help="the admin listener (default http://127.0.0.1:9090)")
    parser.add_argument("--token", help="the admin token")
    parser.add_argument("--token-file", help="a file holding the admin token (e.g. DATA/admin.token)")
    parser.add_argument("--log", default="events", choices=["events", "decisions", "dead_letters"])
    parser.add_argument("--from", dest="start", type=int, default=0, help="the position to start at (default 0)")
    parser.add_argument("--page", type=int, default=10000, help="records per request (at most 10,000)")
    parser.add_argument("--out", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    token = token_of(args)
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    position, records = args.start, 0
    try:
        for body, position in pages(args.admin, token, args.log, args.start, args.page):
            out.write(body)
            records += body.count(b"\n")
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    print(f"{records} record(s) of {args.log}; next position: {position}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""The figures a newsroom asks for, from Pulse's event log and decision log, with DuckDB.

    python3 examples/analysis/export.py --token-file DATA/admin.token --log events > events.jsonl
    python3 examples/analysis/export.py --token-file DATA/admin.token --log decisions > decisions.jsonl
    python3 examples/analysis/newsroom.py events.jsonl decisions.jsonl [--json]

(the logs are exported online, while the gateway runs; `gateway dump` output reads the same).

- **Top articles**: page views and unique readers per article, an article being a page whose
  page views say `content_type = article` (`--all-pages`: every page). A page is its URL
  without query and fragment, so `?utm_source=…` views count for the article.
- **Engaged time**: from the tracker's `engagement` events (`active_ms`: time the page was
  visible with an interaction in the last 5 s; `read_depth`: the deepest point seen, percent),
  per article: total engaged seconds, readers with engaged time, seconds per such reader, and
  the mean over those readers of the deepest read.
- **Conversion by rule**: for each rule of the bundle (the decision log's `rule`), the readers
  it decided for before converting (every decision of a reader who never converted; only those
  strictly before the conversion of one who did, so the decision answering the conversion
  itself does not count), how many of them converted, and the rate. A reader counts for every
  rule that decided for them. A conversion is a custom event named `subscribe` (`--conversion
  NAME`), of the reader's key or anonymous id, as in `conversion.py`.
- **Conversion by experiment arm**: `conversion.py`'s figures (readers exposed, assignment
  probability, conversions, inverse-probability-weighted rate and 95 % interval).

Events are counted once per event id (a retried batch is stored twice: consumers dedupe).
Records are of schema version 1 (`"v"`, absent in records written before versions): the script
refuses a newer version rather than misread it.
"""

import argparse
import json
import sys

import duckdb

import conversion

SCHEMA_VERSION = 1


def quote(path):
    return "'" + path.replace("'", "''") + "'"


def load(con, events, decisions):
    """Creates `events` (deduplicated by event id) and `decisions` from the JSON lines files,
    with the columns `conversion.per_arm` reads too."""
    con.execute(
        f"""CREATE TABLE raw_events AS
        SELECT coalesce(v, 1) AS v, reader, anonymous_id, received_at, time,
               event ->> '$.id' AS id, event ->> '$.type' AS type, event ->> '$.name' AS name,
               event ->> '$.page.url' AS url, event ->> '$.page.title' AS title,
               event ->> '$.props.content_type' AS content_type,
               TRY_CAST(event ->> '$.props.active_ms' AS DOUBLE) AS active_ms,
               TRY_CAST(event ->> '$.props.read_depth' AS DOUBLE) AS read_depth
        FROM read_json({quote(events)}, format = 'newline_delimited',
            columns = {{v: 'UBIGINT', reader: 'VARCHAR', anonymous_id: 'VARCHAR',
                       received_at: 'UBIGINT', time: 'UBIGINT', event: 'JSON'}})"""
    )
    con.execute(
        """CREATE TABLE events AS
        SELECT *, regexp_replace(url, '[?#].*$', '') AS page
        FROM raw_events
        QUALIFY row_number() OVER (PARTITION BY id ORDER BY received_at) = 1"""
    )
    con.execute(
        f"""CREATE TABLE decisions AS
        SELECT coalesce(v, 1) AS v, * EXCLUDE (v)
        FROM read_json({quote(decisions)}, format = 'newline_delimited',
            columns = {{v: 'UBIGINT', time: 'UBIGINT', reader: 'VARCHAR', bundle: 'VARCHAR',
                       action: 'VARCHAR', rule: 'VARCHAR', experiment: 'VARCHAR',
                       arm: 'VARCHAR', probability: 'DOUBLE'}})"""
    )
    for table in ("raw_events", "decisions"):
        newest = con.execute(f"SELECT max(v) FROM {table}").fetchone()[0]
        if newest is not None and newest > SCHEMA_VERSION:
            raise SystemExit(f"{table}: records of schema version {newest}; this script reads version {SCHEMA_VERSION}")


def top_articles(con, all_pages, top):
    rows = con.execute(
        """
        SELECT page, arg_max(title, time) AS title, count(*) AS page_views,
               count(DISTINCT reader) AS readers
        FROM events
        WHERE type = 'page_view' AND ($all_pages OR content_type = 'article')
        GROUP BY page
        ORDER BY page_views DESC, readers DESC, page
        LIMIT $top
        """,
        {"all_pages": all_pages, "top": top},
    ).fetchall()
    return [dict(zip(["page", "title", "page_views", "readers"], r)) for r in rows]


def engagement(con, all_pages, top):
    rows = con.execute(
        """
        WITH articles AS (
            SELECT DISTINCT page FROM events
            WHERE type = 'page_view' AND content_type = 'article'
        ),
        per_reader AS (
            SELECT page, reader, sum(coalesce(active_ms, 0)) AS active_ms,
                   max(read_depth) AS depth
            FROM events
            WHERE type = 'engagement' AND ($all_pages OR page IN (SELECT page FROM articles))
            GROUP BY page, reader
        )
        SELECT page, sum(active_ms) / 1000.0 AS engaged_seconds, count(*) AS readers,
               sum(active_ms) / 1000.0 / count(*) AS seconds_per_reader,
               avg(depth) AS read_depth
        FROM per_reader
        GROUP BY page
        ORDER BY engaged_seconds DESC, page
        LIMIT $top
        """,
        {"all_pages": all_pages, "top": top},
    ).fetchall()
    keys = ["page", "engaged_seconds", "readers", "seconds_per_reader", "read_depth"]
    return [dict(zip(keys, r)) for r in rows]


def by_rule(con, conversion_name):
    rows = con.execute(
        "WITH"
        + conversion.CONVERTED
        + """,
        exposed AS (
            SELECT DISTINCT d.rule, d.reader, c.at IS NOT NULL AS converted
            FROM decisions d LEFT JOIN converted c ON c.key = d.reader
            WHERE c.at IS NULL OR d.time < c.at
        )
        SELECT rule, count(*) AS readers, count(*) FILTER (WHERE converted) AS conversions
        FROM exposed
        GROUP BY rule
        ORDER BY readers DESC, rule
        """,
        {"conversion": conversion_name},
    ).fetchall()
    return [
        {"rule": rule, "readers": readers, "conversions": conversions, "rate": conversions / readers}
        for rule, readers, conversions in rows
    ]


def table(title, head, rows):
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return f"{title}\n" + "\n".join(lines) + "\n"


def report_text(report):
    c = report["conversion"]
    parts = [
        table(
            "Top articles",
            ["page", "page views", "readers", "title"],
            [[r["page"], r["page_views"], r["readers"], r["title"] or ""] for r in report["top_articles"]],
        ),
        table(
            "Engaged time",
            ["page", "engaged", "readers", "per reader", "read depth"],
            [
                [r["page"], f"{r['engaged_seconds']:.1f} s", r["readers"], f"{r['seconds_per_reader']:.1f} s",
                 "" if r["read_depth"] is None else f"{r['read_depth']:.0f} %"]
                for r in report["engagement"]
            ],
        ),
        table(
            f"Conversion ({c}) by rule",
            ["rule", "readers", f"{c}s", "rate"],
            [[r["rule"], r["readers"], r["conversions"], f"{100 * r['rate']:.2f} %"] for r in report["by_rule"]],
        ),
    ]
    if report["by_arm"]:
        parts.append(f"Conversion ({c}) by experiment arm\n" + conversion.table(report["by_arm"], c))
    return "\n".join(parts)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events", help="the event log as JSON lines (export.py --log events, or gateway dump)")
    parser.add_argument("decisions", help="the decision log as JSON lines (export.py --log decisions)")
    parser.add_argument("--conversion", default="subscribe", help="the custom event that counts as a conversion (default: subscribe)")
    parser.add_argument("--top", type=int, default=10, help="rows of the article tables (default 10)")
    parser.add_argument("--all-pages", action="store_true", help="every page, not only articles")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    con = duckdb.connect()
    load(con, args.events, args.decisions)
    stored, kept = con.execute("SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM events)").fetchone()
    report = {
        "conversion": args.conversion,
        "events": kept,
        "duplicates": stored - kept,
        "decisions": con.execute("SELECT count(*) FROM decisions").fetchone()[0],
        "top_articles": top_articles(con, args.all_pages, args.top),
        "engagement": engagement(con, args.all_pages, args.top),
        "by_rule": by_rule(con, args.conversion),
        "by_arm": conversion.per_arm(con, args.conversion),
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report_text(report))


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Conversion per experiment arm, from Pulse's decision log and event log.

    gateway dump --decisions --data DIR > decisions.jsonl
    gateway dump --data DIR > events.jsonl
    python examples/analysis/conversion.py decisions.jsonl events.jsonl [--json]

A reader is *exposed* to an experiment at their first logged decision that carries it (the
decision log records the arm and the probability of that assignment, `probability`). A reader
*converts* when the event log holds a custom event named `subscribe` (`--conversion NAME` to
change it; the page sends it with `pulse('track', 'subscribe')`) of theirs, received at or after
that first exposure. "Theirs": the event's reader key, or its anonymous id, is the reader key
of the decisions, so a reader who logs in while subscribing (their key becomes the user id)
still counts.

For every arm: the readers exposed, the logged probability, the conversions, and the arm's
conversion rate estimated with inverse-probability weighting (the self-normalised, Hajek,
form: each reader weighted by 1 / probability), which is the rate the whole exposed population
would have had in that arm, with a 95 % confidence interval from the design-based variance
(the exposed readers fixed, only the assignment random):
sum((1 - p) / p^2 * (y - rate)^2) / (sum(1 / p))^2. With one probability per arm, the estimate
is the arm's plain rate; the weights matter when an arm's probability changed during the
experiment (a bundle with other weights), which this handles reader by reader.
"""

import argparse
import json
import math
import sys

import duckdb

Z95 = 1.959963984540054


def quote(path):
    return "'" + path.replace("'", "''") + "'"


def load(con, decisions, events):
    """Creates the tables `decisions` and `events` from the JSON lines files."""
    con.execute(
        f"""CREATE TABLE decisions AS
        SELECT * FROM read_json({quote(decisions)}, format = 'newline_delimited',
            columns = {{time: 'UBIGINT', reader: 'VARCHAR', bundle: 'VARCHAR',
                       action: 'VARCHAR', rule: 'VARCHAR', experiment: 'VARCHAR',
                       arm: 'VARCHAR', probability: 'DOUBLE'}})"""
    )
    con.execute(
        f"""CREATE TABLE events AS
        SELECT reader, anonymous_id, received_at,
               event ->> '$.type' AS type, event ->> '$.name' AS name
        FROM read_json({quote(events)}, format = 'newline_delimited',
            columns = {{reader: 'VARCHAR', anonymous_id: 'VARCHAR',
                       received_at: 'UBIGINT', event: 'JSON'}})"""
    )


# A reader converts at their first conversion event: keyed by their reader key and by their
# anonymous id, so that one who logs in while converting still counts (a CTE, `$conversion`).
CONVERTED = """
        converted AS (
            SELECT key, min(received_at) AS at FROM (
                SELECT reader AS key, received_at FROM events
                WHERE type = 'custom' AND name = $conversion
                UNION ALL
                SELECT anonymous_id AS key, received_at FROM events
                WHERE type = 'custom' AND name = $conversion
            ) GROUP BY key
        )"""


def per_arm(con, conversion, experiment=None):
    """One row per experiment and arm."""
    rows = con.execute(
        """
        WITH exposed AS (
            SELECT reader, experiment,
                   arg_min(arm, time) AS arm,
                   arg_min(probability, time) AS probability,
                   min(time) AS first_seen
            FROM decisions
            WHERE experiment IS NOT NULL AND ($experiment IS NULL OR experiment = $experiment)
            GROUP BY reader, experiment
        ),"""
        + CONVERTED
        + """,
        readers AS (
            SELECT x.experiment, x.arm, x.probability,
                   CASE WHEN c.at >= x.first_seen THEN 1.0 ELSE 0.0 END AS y
            FROM exposed x LEFT JOIN converted c ON c.key = x.reader
        ),
        rates AS (
            SELECT experiment, arm,
                   sum(y / probability) / sum(1 / probability) AS rate
            FROM readers GROUP BY experiment, arm
        )
        SELECT r.experiment, r.arm, count(*) AS readers,
               min(r.probability) AS p_min, max(r.probability) AS p_max,
               sum(r.y)::BIGINT AS conversions,
               any_value(t.rate) AS rate,
               sum((1 - r.probability) / (r.probability * r.probability)
                   * (r.y - t.rate) * (r.y - t.rate)) / pow(sum(1 / r.probability), 2)
                   AS variance
        FROM readers r JOIN rates t USING (experiment, arm)
        GROUP BY r.experiment, r.arm
        ORDER BY r.experiment, r.arm
        """,
        {"experiment": experiment, "conversion": conversion},
    ).fetchall()
    out = []
    for experiment, arm, readers, p_min, p_max, conversions, rate, variance in rows:
        half = Z95 * math.sqrt(max(variance or 0.0, 0.0))
        out.append(
            {
                "experiment": experiment,
                "arm": arm,
                "readers": readers,
                "probability": p_min if p_min == p_max else None,
                "probability_range": [p_min, p_max],
                "conversions": conversions,
                "rate": rate,
                "ci_low": max(0.0, rate - half),
                "ci_high": min(1.0, rate + half),
            }
        )
    return out


def table(rows, conversion):
    head = ["experiment", "arm", "readers", "probability", f"{conversion}s", "rate (IPW)", "95 % CI"]
    body = []
    for r in rows:
        p = r["probability"]
        body.append(
            [
                r["experiment"],
                r["arm"],
                str(r["readers"]),
                f"{p:.4g}" if p is not None else "{:.4g}..{:.4g}".format(*r["probability_range"]),
                str(r["conversions"]),
                f"{100 * r['rate']:.2f} %",
                f"{100 * r['ci_low']:.2f} – {100 * r['ci_high']:.2f} %",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return "\n".join(lines) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("decisions", help="the decision log as JSON lines (gateway dump --decisions)")
    parser.add_argument("events", help="the event log as JSON lines (gateway dump)")
    parser.add_argument("--conversion", default="subscribe", help="the custom event that counts as a conversion (default: subscribe)")
    parser.add_argument("--experiment", help="only this experiment")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    con = duckdb.connect()
    load(con, args.decisions, args.events)
    rows = per_arm(con, args.conversion, args.experiment)
    if args.json:
        json.dump({"conversion": args.conversion, "arms": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        sys.stdout.write(table(rows, args.conversion))
    else:
        sys.stdout.write("no decision in the log carries an experiment\n")


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""The load runs and the BENCH.md writer of scripts/bench.sh (run that, not this).

  bench_driver.py load            ingest search, decision latency, memory -> $BENCH_WORK/load.json
  bench_driver.py profile URL R   a steady h1 load at R req/s on the profiled gateway
  bench_driver.py write           rewrites the generated sections of BENCH.md
"""

import json
import os
import platform
import re
import subprocess
import sys
import time

BIN = os.environ.get("BENCH_BIN", "target/release")
WORK = os.environ.get("BENCH_WORK", "/tmp")
ROOT = os.environ.get("BENCH_ROOT", ".")
QUICK = os.environ.get("BENCH_QUICK", "0") == "1"
P99_MS = 10.0
WARMUP, STEP = (0.5, 1.5) if QUICK else (1.0, 4.0)
COMMANDS = []


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


CA = {}  # https URL -> the certificate to trust


def load(url, args):
    """Runs pulse-load with `args` against `url`; returns its JSON report."""
    cmd = [f"{BIN}/pulse-load", "--url", url, "--origin", url, "--json", "--quiet",
           "--timeout", "5", "--max-error-rate", "1"] + [str(a) for a in args]
    if url in CA:
        cmd += ["--ca", CA[url]]
    COMMANDS.append(" ".join(cmd[1:]).replace(url, "$URL").replace(CA.get(url, "\0"), "$CA"))
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        log(f"pulse-load failed: {out.stderr.strip()[-400:]}")
        return None


def workers(proto, closed):
    if proto == "h1":
        return ["--connections", 32 if closed else 64]
    return ["--connections", 4, "--streams", 16 if closed else 32]


def sustained(r, rate):
    return (r is not None and r["errors"] == 0 and r["latency_ms"]["p99"] < P99_MS
            and r["requests"] >= 0.97 * rate * STEP)


def find_max(url, proto, epb):
    """The highest open-loop rate with no errors and p99 < 10 ms: a closed-loop probe, then
    rates stepping down from 90% of it, then one step halfway back up."""
    common = ["--proto", proto, "--events-per-batch", epb]
    probe = load(url, common + workers(proto, True) + ["--duration", 2 if QUICK else 3,
                                                       "--warmup", WARMUP, "--pool", 30000])
    if probe is None or probe["ok"] == 0:
        reasons = probe["errors_by_reason"] if probe else {"no_report": 1}
        return {"supported": False, "why": ", ".join(reasons)}
    top = probe["requests_per_s"]
    steps = [0.9, 0.75, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05]
    best, fail, tried = None, None, []
    for f in steps:
        rate = round(top * f, 1)
        r = load(url, common + workers(proto, False) + ["--rate", rate, "--duration", STEP,
                                                         "--warmup", WARMUP])
        log(f"  {proto} {epb:>2} ev/batch {url}: {rate} req/s -> p99 "
            f"{r['latency_ms']['p99'] if r else '?'} ms, errors {r['errors'] if r else '?'}")
        if r:
            tried.append({"rate": rate, "p99": r["latency_ms"]["p99"], "errors": r["errors"]})
        if sustained(r, rate):
            best = (rate, r)
            break
        fail = rate
    if best is None:
        return {"supported": True, "probe": probe, "best": None, "tried": tried}
    if fail is not None:
        rate = round((best[0] + fail) / 2, 1)
        r = load(url, common + workers(proto, False) + ["--rate", rate, "--duration", STEP,
                                                         "--warmup", WARMUP])
        log(f"  refine {rate} req/s -> p99 {r['latency_ms']['p99'] if r else '?'} ms")
        if sustained(r, rate):
            best = (rate, r)
    return {"supported": True, "probe": probe, "rate": best[0], "best": best[1]}


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fsync_probe(folder):
    """p50/p99 ms of 200 appends of 2 KiB, each followed by fsync, in `folder` (the disk the
    gateway's store is on): the floor under any ack-after-fsync latency."""
    path = os.path.join(folder, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(200):
            os.write(fd, b"x" * 2048)
            t = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {"p50": times[100], "p99": times[197], "max": times[-1]}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "load_before": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": rev}


def cmd_load():
    floor, gw = os.environ["FLOOR_URL"], os.environ["GW_URL"]
    floor_tls, gw_tls = os.environ.get("FLOOR_TLS_URL", "-"), os.environ.get("GW_TLS_URL", "-")
    CA[floor_tls], CA[gw_tls] = os.environ.get("FLOOR_CA", ""), os.environ.get("GW_CA", "")
    res = {"machine": machine(), "ingest": [], "quick": QUICK,
           "fsync_before": fsync_probe(WORK)}
    for proto in ["h1", "h2", "h3"]:
        for epb in [1, 10, 50]:
            row = {"proto": proto, "events_per_batch": epb}
            servers = [("floor", floor), ("gateway", gw)]
            if proto == "h3":
                servers = [("floor", floor_tls), ("gateway", gw_tls)]
            for name, url in servers:
                log(f"ingest: {name} {proto} {epb} events/batch")
                row[name] = find_max(url, proto, epb)
            res["ingest"].append(row)
    # Decision latency: both servers at half the gateway's sustainable h1 rate, batches of 10.
    g10 = next(r for r in res["ingest"] if r["proto"] == "h1" and r["events_per_batch"] == 10)
    if g10["gateway"].get("rate"):
        rate, why = round(g10["gateway"]["rate"] / 2, 1), "half the gateway's sustainable rate"
    elif g10["gateway"].get("probe"):
        rate = round(g10["gateway"]["probe"]["requests_per_s"] / 4, 1)
        why = "a quarter of the gateway's closed-loop throughput (no rate met p99 < 10 ms)"
    else:
        rate, why = 100.0, "a fixed 100 req/s (the gateway's probe failed)"
    dur = 3 if QUICK else 10
    res["latency"] = {"rate": rate, "why": why, "duration": dur}
    for name, url in [("gateway", gw), ("floor", floor)]:
        log(f"decision latency: {name} at {rate} req/s")
        res["latency"][name] = load(url, ["--proto", "h1", "--events-per-batch", 10, "--rate",
                                          rate, "--duration", dur, "--warmup", WARMUP]
                                    + workers("h1", False))
    res["memory_kib"] = {"gateway": vm_hwm(os.environ["GW_PID"]),
                         "floor": vm_hwm(os.environ["FLOOR_PID"])}
    res["load_after"] = os.getloadavg()
    res["fsync_after"] = fsync_probe(WORK)
    res["commands"] = COMMANDS
    with open(f"{WORK}/load.json", "w") as f:
        json.dump(res, f, indent=1)


def cmd_profile(url, rate):
    # Under valgrind the gateway is far slower: errors are expected and allowed here.
    r = load(url, ["--proto", "h1", "--events-per-batch", 10, "--rate", rate, "--connections",
                   16, "--duration", 5 if QUICK else 15, "--warmup", 2])
    with open(f"{WORK}/profile-load.json", "w") as f:
        json.dump({"report": r, "command": COMMANDS[-1]}, f, indent=1)


def fmt_int(v):
    return f"{v:,.0f}"


def replace(text, name, body):
    pat = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"BENCH.md has no section {name}")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def ingest_cell(x):
    if not x.get("supported"):
        return f"not served ({x.get('why', '?')})"
    b = x.get("best")
    if b is None:
        low = min(x.get("tried") or [{"rate": 0, "p99": float("nan")}], key=lambda t: t["p99"])
        return (f"p99 ≥ 10 ms at every rate tried (lowest p99 {low['p99']:.1f} ms, "
                f"at {low['rate']} req/s)")
    return (f"{fmt_int(b['events_per_s'])} ev/s ({fmt_int(b['requests_per_s'])} req/s, "
            f"p99 {b['latency_ms']['p99']:.2f} ms)")


def criterion_rows():
    target = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
    rows = []
    for n in [1, 10, 50]:
        path = f"{target}/criterion/decide/{n}_events/new/estimates.json"
        try:
            with open(path) as f:
                est = json.load(f)
            mean = est["mean"]["point_estimate"] / 1000.0
            median = est["median"]["point_estimate"] / 1000.0
            rows.append(f"| {n} | {median:.1f} | {mean:.1f} | {mean / n:.2f} |")
        except (OSError, KeyError, json.JSONDecodeError):
            rows.append(f"| {n} | ? | ? | ? |")
    return rows


def fsync_text(f):
    return f"{f['p50']:.2f} / {f['p99']:.2f} / {f['max']:.2f}" if f else "?"


def cmd_write():
    with open(f"{WORK}/load.json") as f:
        res = json.load(f)
    with open(f"{WORK}/bytes.json") as f:
        by = json.load(f)
    path = f"{ROOT}/BENCH.md"
    with open(path) as f:
        text = f.read()
    m = res["machine"]
    text = replace(text, "machine", "\n".join([
        f"- Run: {m['date']}, commit `{m['commit']}`" + (" (BENCH_QUICK=1: short steps)" if res["quick"] else ""),
        f"- `nproc`: {m['nproc']}; CPU: {m['cpu']}; `uname -r`: {m['kernel']}",
        "- Client (pulse-load) and servers share the same cores over loopback.",
        "- Load average (1, 5, 15 min) when the load runs started: "
        + ", ".join(f"{x:.2f}" for x in m["load_before"])
        + "; when they ended: " + ", ".join(f"{x:.2f}" for x in res["load_after"])
        + ". Above 2 means other work (builds) competed for the 2 cores.",
        "- fsync of a 2 KiB append on the store's disk, p50 / p99 / max ms (200 tries): before the "
        "load runs " + fsync_text(res.get("fsync_before")) + "; after them "
        + fsync_text(res.get("fsync_after")) + ".",
    ]))
    rows = ["| proto | events/batch | floor | gateway | gateway / floor |", "|---|---:|---|---|---:|"]
    ceil = ["| proto | events/batch | floor | gateway | gateway / floor |", "|---|---:|---:|---:|---:|"]
    for r in res["ingest"]:
        fl, gw = r["floor"], r["gateway"]
        ratio = "–"
        if fl.get("best") and gw.get("best"):
            ratio = f"{gw['best']['events_per_s'] / fl['best']['events_per_s']:.2f}"
        proto = {"h1": "HTTP/1.1", "h2": "HTTP/2 (h2c)", "h3": "HTTP/3 (QUIC)"}[r["proto"]]
        rows.append(f"| {proto} | {r['events_per_batch']} | {ingest_cell(fl)} | {ingest_cell(gw)} | {ratio} |")

        def top(x):
            p = x.get("probe")
            if not x.get("supported") or not p:
                return "not served"
            return f"{fmt_int(p['events_per_s'])} ev/s (p99 {p['latency_ms']['p99']:.1f} ms)"
        cratio = "–"
        if fl.get("probe") and gw.get("probe") and gw.get("supported"):
            cratio = f"{gw['probe']['events_per_s'] / fl['probe']['events_per_s']:.2f}"
        ceil.append(f"| {proto} | {r['events_per_batch']} | {top(fl)} | {top(gw)} | {cratio} |")
    rows += ["", "Throughput ceiling: the closed-loop probe (HTTP/1.1 32 connections, HTTP/2 and "
             "HTTP/3 4 × 16 streams, 3 s), whatever the latency:", ""] + ceil
    text = replace(text, "ingest", "\n".join(rows))
    lat = res["latency"]
    rows = [f"Open loop at {lat['rate']} req/s ({lat.get('why', '')}; 10 events per batch, "
            f"HTTP/1.1, 64 connections), {lat['duration']} s measured:", "",
            "| server | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ["gateway", "floor"]:
        r = lat.get(name)
        if r:
            l = r["latency_ms"]
            rows.append(f"| {name} | {l['p50']:.2f} | {l['p90']:.2f} | {l['p99']:.2f} | "
                        f"{l['p999']:.2f} | {l['max']:.2f} | {r['errors']} |")
    text = replace(text, "latency", "\n".join(rows))
    text = replace(text, "decide", "\n".join(
        ["| events/batch | median µs | mean µs | mean µs per event |", "|---:|---:|---:|---:|"]
        + criterion_rows()))
    rows = ["| events/batch | JSON | gzip -6 | zstd, as the tracker sends it (ruzstd fastest) | zstd -3 | zstd -3 + dictionary |",
            "|---:|---:|---:|---:|---:|---:|"]
    for r in by["rows"]:
        rows.append(f"| {r['events_per_batch']} | {r['json']:.0f} | {r['gzip']:.0f} | {r['zstd_tracker']:.0f} | "
                    f"{r['zstd_3']:.0f} | {r['zstd_3_dict']:.0f} |")
    rows += ["", f"Bytes per event, mean of {by['batches']} batches per size; the dictionary "
             f"({by['dictionary_bytes']:,} bytes) was trained on {by.get('trained_on', 3000):,} batches of other readers."]
    text = replace(text, "bytes", "\n".join(rows))
    mem = res["memory_kib"]
    text = replace(text, "memory", "\n".join([
        "| process | peak RSS (VmHWM) after all ingest and latency runs |", "|---|---:|",
        f"| gateway | {fmt_int((mem['gateway'] or 0) / 1024)} MiB |",
        f"| floor | {fmt_int((mem['floor'] or 0) / 1024)} MiB |"]))
    with open(f"{WORK}/profiler.txt") as f:
        profiler = f.read().strip()
    with open(f"{WORK}/profile.txt") as f:
        lines = f.read().splitlines()
    # callgrind_annotate prints a header first; keep the table after its "file:function" line.
    marks = [i for i, l in enumerate(lines) if l.rstrip().endswith("file:function")]
    prof = "\n".join(l[:160] for l in lines[marks[-1] + 2:] if l.strip()) if marks else "\n".join(lines)
    incl = ""
    try:
        with open(f"{WORK}/profile-inclusive.txt") as f:
            keep = [l[:160] for l in f.read().splitlines()
                    if re.search(r"pulse_|fjall::|lsm_tree::|decompress_stream|EventRecord", l)]
        if keep:
            incl = ("\n\nInclusive cost of Pulse's own functions and the store (callgrind):\n\n```\n"
                    + "\n".join(keep[:25]) + "\n```")
    except OSError:
        pass
    try:
        with open(f"{WORK}/profile-load.json") as f:
            pl = json.load(f)
        plr = pl["report"]
        load_line = (f"Load during the profile: `{pl['command']}` — {plr['requests']} requests, "
                     f"{plr['errors']} errors, p99 {plr['latency_ms']['p99']:.1f} ms (under {profiler}).")
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        load_line = "Load during the profile: see scripts/bench_driver.py (report missing)."
    text = replace(text, "profile", f"{load_line}\n\nSelf cost, top entries ({profiler}):\n\n```\n{prof}\n```{incl}")
    text = replace(text, "commands", "```\n" + "\n".join(res["commands"]) + "\n```")
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "load":
        cmd_load()
    elif what == "profile":
        cmd_profile(sys.argv[2], float(sys.argv[3]))
    elif what == "write":
        cmd_write()
    else:
        raise SystemExit(__doc__)

#!/usr/bin/env python3
"""The load runs and the BENCH.md writer of scripts/bench.sh (run that, not this).

  bench_driver.py load     ingest search, decision latency with the gateway's own histograms,
                           memory -> $BENCH_WORK/load.json
  bench_driver.py cost     the floor and the gateway (embedded, Kafka) under callgrind: cost per
                           event (instructions, allocations) and the gateway's profile
                           -> $BENCH_WORK/cost.json, profile.txt, profile-inclusive.txt
  bench_driver.py rss      the embedded gateway (RSS_PID, RSS_URL) for BENCH_RSS_S seconds (900)
                           of 1,000,000 distinct readers at half its sustainable rate, its RSS
                           sampled every 10 s -> $BENCH_WORK/rss.json
  bench_driver.py write    rewrites the generated sections of BENCH.md

The servers under load are started by bench.sh; their addresses come in the environment:
FLOOR_URL, GW_URL, KAFKA_GW_URL (cleartext), *_TLS_URL and *_CA (TLS + QUIC), *_ADMIN_URL
(the gateways' admin listeners, token BENCH_TOKEN), *_PID.
"""

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request

BIN = os.environ.get("BENCH_BIN", "target/release")
WORK = os.environ.get("BENCH_WORK", "/tmp")
ROOT = os.environ.get("BENCH_ROOT", ".")
QUICK = os.environ.get("BENCH_QUICK", "0") == "1"
TOKEN = os.environ.get("BENCH_TOKEN", "bench")
P99_MS = 10.0
WARMUP, STEP = (0.5, 1.5) if QUICK else (1.0, 4.0)
COMMANDS = []
# The gateways under load, by name: embedded store, and Kafka (librdkafka's mock cluster).
GATEWAYS = [("gateway", "GW"), ("kafka", "KAFKA_GW")]
LABEL = {"gateway": "gateway (embedded)", "kafka": "gateway (Kafka)", "floor": "floor"}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


CA = {}  # https URL -> the certificate to trust


def load(url, args, record=True):
    """Runs pulse-load with `args` against `url`; returns its JSON report."""
    cmd = [f"{BIN}/pulse-load", "--url", url, "--origin", url, "--json", "--quiet",
           "--timeout", "5", "--max-error-rate", "1"] + [str(a) for a in args]
    if url in CA:
        cmd += ["--ca", CA[url]]
    if record:
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
    except (OSError, TypeError):
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
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "load_before": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": rev + ("+changes" if dirty else ""),
            "binaries": os.environ.get("BENCH_BIN_NOTE", "")}


# --- The gateway's own histograms, scraped from its admin listener ------------------------------

def scrape(admin):
    """Every histogram of the gateway's /metrics: {name: [(le, cumulative count), ...]}."""
    if not admin or admin == "-":
        return {}
    req = urllib.request.Request(f"{admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read().decode()
    except OSError as e:
        log(f"cannot scrape {admin}: {e}")
        return {}
    out = {}
    # Request durations are by handler: only collect's are the batches sent here.
    bucket = r'^(pulse_\w+?)_bucket\{le="([^"]+)"(?:,handler="(\w+)")?\} (\d+)$'
    for m in re.finditer(bucket, text, re.M):
        name, le, handler, n = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if handler in (None, "collect"):
            out.setdefault(name, []).append((float("inf") if le == "+Inf" else float(le), n))
    for m in re.finditer(r'^(pulse_\w+?)_sum(?:\{handler="(\w+)"\})? (\S+)$', text, re.M):
        if m.group(1) in out and m.group(2) in (None, "collect"):
            out[m.group(1) + ":sum"] = float(m.group(3))
    return out


def histogram_delta(before, after):
    """Per histogram: count, mean and p50/p99/p99.9 (interpolated within buckets) of the
    observations made between the two scrapes."""
    rows = {}
    for name, buckets in after.items():
        if name.endswith(":sum"):
            continue
        prev = dict(before.get(name, []))
        cum = [(le, n - prev.get(le, 0)) for le, n in buckets]
        count = cum[-1][1] if cum else 0
        if count == 0:
            continue
        total = after.get(name + ":sum", 0.0) - before.get(name + ":sum", 0.0)

        def quantile(q):
            target = q * count
            lo = 0.0
            for le, n in cum:
                if n >= target:
                    if le == float("inf"):
                        return None  # above the last bound
                    below = next((c for l, c in reversed(cum) if l < le), 0)
                    inside = n - below
                    frac = (target - below) / inside if inside else 1.0
                    return lo + (le - lo) * frac
                lo = le
            return None
        rows[name] = {"count": count, "mean": total / count,
                      "p50": quantile(0.5), "p99": quantile(0.99), "p999": quantile(0.999),
                      "last_bound": max(le for le, _ in cum if le != float("inf"))}
    return rows


def cmd_load():
    urls = {"floor": (os.environ["FLOOR_URL"], os.environ.get("FLOOR_TLS_URL", "-"))}
    for name, env in GATEWAYS:
        if os.environ.get(f"{env}_URL", "-") != "-":
            urls[name] = (os.environ[f"{env}_URL"], os.environ.get(f"{env}_TLS_URL", "-"))
    for env in ["FLOOR"] + [e for _, e in GATEWAYS]:
        CA[os.environ.get(f"{env}_TLS_URL", "-")] = os.environ.get(f"{env}_CA", "")
    res = {"machine": machine(), "ingest": [], "quick": QUICK,
           "fsync_before": fsync_probe(WORK), "servers": list(urls)}
    for proto in ["h1", "h2", "h3"]:
        for epb in [1, 10, 50]:
            row = {"proto": proto, "events_per_batch": epb}
            for name, (plain, tls) in urls.items():
                url = tls if proto == "h3" else plain
                log(f"ingest: {name} {proto} {epb} events/batch")
                row[name] = find_max(url, proto, epb)
            res["ingest"].append(row)
    # Decision latency: each gateway at half its sustainable h1 rate (batches of 10), the floor
    # at the same rate; the gateway's sink and decision histograms scraped around the run.
    dur = 3 if QUICK else 10
    res["latency"] = []
    for name, env in GATEWAYS:
        if name not in urls:
            continue
        g10 = next(r for r in res["ingest"] if r["proto"] == "h1" and r["events_per_batch"] == 10)
        g = g10[name]
        if g.get("rate"):
            rate, why = round(g["rate"] / 2, 1), "half its sustainable rate"
        elif g.get("probe"):
            rate = round(g["probe"]["requests_per_s"] / 4, 1)
            why = "a quarter of its closed-loop throughput (no rate met p99 < 10 ms)"
        else:
            rate, why = 100.0, "a fixed 100 req/s (its probe failed)"
        entry = {"gateway": name, "rate": rate, "why": why, "duration": dur}
        admin = os.environ.get(f"{env}_ADMIN_URL", "-")
        args = ["--proto", "h1", "--events-per-batch", 10, "--rate", rate, "--duration", dur,
                "--warmup", WARMUP] + workers("h1", False)
        log(f"decision latency: {name} at {rate} req/s")
        before = scrape(admin)
        entry["server"] = load(urls[name][0], args)
        entry["histograms"] = histogram_delta(before, scrape(admin))
        log(f"decision latency: floor at {rate} req/s")
        entry["floor"] = load(urls["floor"][0], args)
        res["latency"].append(entry)
    res["memory_kib"] = {name: vm_hwm(os.environ.get(f"{env}_PID"))
                         for name, env in [("floor", "FLOOR")] + GATEWAYS}
    res["load_after"] = os.getloadavg()
    res["fsync_after"] = fsync_probe(WORK)
    res["commands"] = COMMANDS
    with open(f"{WORK}/load.json", "w") as f:
        json.dump(res, f, indent=1)


# --- Cost per event under callgrind --------------------------------------------------------------

ALLOC_FNS = ("malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign")


def callgrind_totals(path):
    """Instructions and calls of the allocation functions in a callgrind dump."""
    names, calls, total, pending = {}, {f: 0 for f in ALLOC_FNS}, None, None
    with open(path) as f:
        for line in f:
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                kind, i, name = m.groups()
                if name:
                    names[i] = name
                pending = names.get(i) if kind == "cfn" else None
                continue
            if pending is not None and line.startswith("calls="):
                if pending in calls:
                    calls[pending] += int(line.split()[0][6:])
                pending = None
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return total, calls


def start_server(name, cmd, prefix):
    """Starts a server; returns (process, url, admin url) once it printed its address."""
    out = open(f"{WORK}/{name}.out", "w")
    err = open(f"{WORK}/{name}.err", "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    for _ in range(1200):
        time.sleep(0.1)
        with open(f"{WORK}/{name}.out") as f:
            text = f.read()
        m = re.search(rf"^{prefix}(\S+?)/?$", text, re.M)
        if m:
            admin = re.search(r"^pulse admin listening on (\S+?)/?$", text, re.M)
            return proc, m.group(1), admin.group(1) if admin else "-"
        if proc.poll() is not None:
            break
    with open(f"{WORK}/{name}.err") as f:
        log(f"{name} did not start: {f.read()[-800:]}")
    proc.kill()
    return None, None, None


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cost_of(name, cmd, prefix, epb, rate, dur, keep_profile):
    """Runs `cmd` under callgrind, loads it at `rate` req/s of `epb`-event batches (h1) for
    `dur` s after a warmup, and returns the instructions and allocations per accepted event
    of the measured part only (counters zeroed before it, dumped after it)."""
    out_file = f"{WORK}/callgrind.{name}.{epb}.out"
    for old in [out_file, out_file + ".1"]:
        if os.path.exists(old):
            os.unlink(old)
    proc, url, _ = start_server(f"{name}-cg", ["valgrind", "--tool=callgrind",
                                              f"--callgrind-out-file={out_file}"] + cmd, prefix)
    if proc is None:
        return None
    try:
        args = ["--proto", "h1", "--events-per-batch", epb, "--connections", 16]
        load(url, args + ["--rate", rate, "--duration", 2 if QUICK else 4], record=False)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        report = load(url, args + ["--rate", rate, "--duration", dur])
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
    finally:
        stop_server(proc)
    dump = out_file + ".1"
    if report is None or not os.path.exists(dump):
        return None
    total, calls = callgrind_totals(dump)
    events = report.get("events_accepted") or 0
    if keep_profile:
        # A dump taken while threads run charges the frames on their stacks (thread start, the
        # runtime's loops) with everything below them, as if it were their own: leave those out
        # of the self-cost table.
        stack = re.compile(r"clone\.S|start_thread|thread_start|call_once|begin_short_backtrace|"
                           r"tokio::runtime::|\{\{vtable")
        for incl, dest in [("no", "profile.txt"), ("yes", "profile-inclusive.txt")]:
            text = subprocess.run(["callgrind_annotate", f"--inclusive={incl}", "--threshold=100",
                                   dump], capture_output=True, text=True).stdout
            lines = text.splitlines()
            if incl == "no":
                lines = [l for l in lines if not stack.search(l)][:45]
            with open(f"{WORK}/{dest}", "w") as f:
                f.write("\n".join(lines[:400]))
        with open(f"{WORK}/profile-load.json", "w") as f:
            json.dump({"report": report, "command": COMMANDS[-1]}, f, indent=1)
    allocs = sum(calls.values())
    return {"events": events, "requests": report.get("ok"), "errors": report.get("errors"),
            "instructions": total, "allocations": allocs,
            "instructions_per_event": total / events if events else None,
            "allocations_per_event": allocs / events if events else None,
            "command": COMMANDS[-1]}


def cmd_cost():
    cfg, work = os.environ["BENCH_CONFIG"], WORK
    servers = [
        ("floor", [f"{BIN}/pulse-floor", "--listen", "127.0.0.1:0", "--data",
                   f"{work}/cg-floor-data"], "pulse floor listening on "),
        ("gateway", [f"{BIN}/gateway", "--config", cfg, "--data", f"{work}/cg-gw-data",
                     "--log", "warn"], "pulse gateway listening on "),
    ]
    if os.environ.get("KAFKA_CONFIG"):
        servers.append(("kafka", [f"{BIN}/gateway", "--config", os.environ["KAFKA_CONFIG"],
                                  "--data", f"{work}/cg-kafka-data", "--log", "warn"],
                        "pulse gateway listening on "))
    # Rates a gateway keeps up with under callgrind (tens of times slower than native).
    plan = [(10, 100)] if QUICK else [(1, 100), (10, 100), (50, 40)]
    dur = 3 if QUICK else 10
    res = {"rows": [], "duration": dur}
    for epb, rate in plan:
        for name, cmd, prefix in servers:
            log(f"callgrind: {name}, {epb} events/batch at {rate} req/s")
            row = cost_of(name, cmd, prefix, epb, rate, dur,
                          keep_profile=(name == "gateway" and epb == 10))
            res["rows"].append({"server": name, "events_per_batch": epb, "rate": rate,
                                "cost": row})
    with open(f"{WORK}/cost.json", "w") as f:
        json.dump(res, f, indent=1)


# --- BENCH.md ------------------------------------------------------------------------------------

def fmt_int(v):
    return f"{v:,.0f}"


def replace(text, name, body):
    pat = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"BENCH.md has no section {name}")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def ingest_cell(x):
    if not x or not x.get("supported"):
        return f"not served ({(x or {}).get('why', '?')})"
    b = x.get("best")
    if b is None:
        low = min(x.get("tried") or [{"rate": 0, "p99": float("nan")}], key=lambda t: t["p99"])
        return (f"p99 ≥ 10 ms at every rate tried (lowest p99 {low['p99']:.1f} ms, "
                f"at {low['rate']} req/s)")
    return (f"{fmt_int(b['events_per_s'])} ev/s ({fmt_int(b['requests_per_s'])} req/s, "
            f"p99 {b['latency_ms']['p99']:.2f} ms)")


def criterion_text():
    """The scorer's criterion figures (scorer/benches/decide.rs): update per event, decide per
    batch, and the latency lines the bench prints (from criterion.txt)."""
    target = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")

    def estimates(name):
        try:
            with open(f"{target}/criterion/{name}/new/estimates.json") as f:
                est = json.load(f)
            return est["median"]["point_estimate"] / 1000.0, est["mean"]["point_estimate"] / 1000.0
        except (OSError, KeyError, json.JSONDecodeError):
            return None

    lat, heap = {}, None
    for path in (f"{WORK}/criterion.txt", f"{target}/bench/criterion.txt"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("heap: "):
                        heap = line[len("heap: "):].strip()
                    m = re.match(r"decide latency, (\d+) event.*p50 ([\d.]+) µs, p99 ([\d.]+) µs, "
                                 r"p99\.9 ([\d.]+) µs", line)
                    if m:
                        lat[int(m.group(1))] = m.groups()[1:]
            if lat:
                break
        except OSError:
            continue
    rows = ["| what | median µs | mean µs | per event µs | events/s on one core | p50 µs | p99 µs | p99.9 µs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in [("update/state", "update, state alone (10-event batch)"),
                        ("update/engine", "update through the engine (10-event batch)")]:
        e = estimates(name)
        if e:
            rows.append(f"| {label} | {e[0]:.1f} | {e[1]:.1f} | {e[1] / 10:.2f} | "
                        f"{fmt_int(10e6 / e[1])} | | | |")
    for n in [1, 10, 50]:
        e = estimates(f"decide/{n}_events")
        p = lat.get(n, ("?", "?", "?"))
        if e:
            rows.append(f"| decide, {n}-event batch | {e[0]:.1f} | {e[1]:.1f} | {e[1] / n:.2f} | "
                        f"{fmt_int(n * 1e6 / e[1])} | {p[0]} | {p[1]} | {p[2]} |")
    if heap:
        rows += ["", f"The bench's heap: {heap}."]
    return "\n".join(rows)


def fsync_text(f):
    return f"{f['p50']:.2f} / {f['p99']:.2f} / {f['max']:.2f}" if f else "?"


PROTO = {"h1": "HTTP/1.1", "h2": "HTTP/2 (h2c)", "h3": "HTTP/3 (QUIC)"}


def ingest_tables(res):
    out = []
    for name in [n for n, _ in GATEWAYS if n in res.get("servers", ["gateway"])]:
        rows = [f"**{LABEL[name]} against the floor**, highest rate with p99 < 10 ms:", "",
                f"| proto | events/batch | floor | {LABEL[name]} | {name} / floor |",
                "|---|---:|---|---|---:|"]
        ceil = ["", f"Throughput ceiling of the {LABEL[name]}: the closed-loop probe (HTTP/1.1 32 "
                "connections, HTTP/2 and HTTP/3 4 × 16 streams, 3 s), whatever the latency:", "",
                f"| proto | events/batch | floor | {LABEL[name]} | {name} / floor |",
                "|---|---:|---:|---:|---:|"]
        for r in res["ingest"]:
            fl, gw = r["floor"], r.get(name) or {}
            ratio = "–"
            if fl.get("best") and gw.get("best"):
                ratio = f"{gw['best']['events_per_s'] / fl['best']['events_per_s']:.2f}"
            proto = PROTO[r["proto"]]
            rows.append(f"| {proto} | {r['events_per_batch']} | {ingest_cell(fl)} | "
                        f"{ingest_cell(gw)} | {ratio} |")

            def top(x):
                p = x.get("probe")
                if not x.get("supported") or not p:
                    return "not served"
                return f"{fmt_int(p['events_per_s'])} ev/s (p99 {p['latency_ms']['p99']:.1f} ms)"
            cratio = "–"
            if fl.get("probe") and gw.get("probe") and gw.get("supported"):
                cratio = f"{gw['probe']['events_per_s'] / fl['probe']['events_per_s']:.2f}"
            ceil.append(f"| {proto} | {r['events_per_batch']} | {top(fl)} | {top(gw)} | {cratio} |")
        out += rows + ceil + [""]
    return "\n".join(out)


def ms(v):
    return "–" if v is None else f"{v * 1000:.2f}"


def latency_tables(res):
    lat = res["latency"]
    if isinstance(lat, dict):  # a run of the earlier driver
        lat = [{"gateway": "gateway", "rate": lat["rate"], "why": lat.get("why", ""),
                "duration": lat["duration"], "server": lat.get("gateway"),
                "floor": lat.get("floor"), "histograms": {}}]
    rows = ["| server | rate req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    hist = ["| server | histogram | observations | mean ms | p50 ms | p99 ms | p99.9 ms |",
            "|---|---|---:|---:|---:|---:|---:|"]
    notes = []
    for e in lat:
        notes.append(f"{LABEL[e['gateway']]}: {e['rate']} req/s ({e['why']})")
        for who, r in [(LABEL[e["gateway"]], e.get("server")), ("floor", e.get("floor"))]:
            if r:
                l = r["latency_ms"]
                rows.append(f"| {who} | {e['rate']} | {l['p50']:.2f} | {l['p90']:.2f} | "
                            f"{l['p99']:.2f} | {l['p999']:.2f} | {l['max']:.2f} | {r['errors']} |")
        for hname, h in sorted(e.get("histograms", {}).items()):
            short = (hname.removeprefix("pulse_gateway_").removesuffix("_seconds")
                     .removesuffix("_duration"))
            hist.append(f"| {LABEL[e['gateway']]} | `{short}` | {h['count']:,} | "
                        f"{h['mean'] * 1000:.3f} | {ms(h['p50'])} | {ms(h['p99'])} | "
                        f"{ms(h['p999'])} |")
    dur = lat[0]["duration"] if lat else "?"
    head = (f"Open loop, 10 events per batch, HTTP/1.1, 64 connections, {dur} s measured; "
            + "; ".join(notes) + ". The floor runs at the same rate as the gateway above it.")
    text = head + "\n\n" + "\n".join(rows)
    if len(hist) > 2:
        text += ("\n\nThe gateway's own histograms over the same runs (admin `/metrics`, scraped "
                 "before and after; quantiles interpolated within buckets, `–` when above the "
                 "last bucket):\n\n" + "\n".join(hist))
    return text


def cost_table():
    try:
        with open(f"{WORK}/cost.json") as f:
            cost = json.load(f)
    except (OSError, json.JSONDecodeError):
        return "Not measured in this run."
    rows = ["| events/batch | server | events measured | instructions per event | "
            "allocations per event | instructions / floor's |", "|---:|---|---:|---:|---:|---:|"]
    floor = {r["events_per_batch"]: (r["cost"] or {}).get("instructions_per_event")
             for r in cost["rows"] if r["server"] == "floor"}
    for r in cost["rows"]:
        c = r["cost"]
        if not c or not c.get("instructions_per_event"):
            rows.append(f"| {r['events_per_batch']} | {LABEL[r['server']]} | – | – | – | – |")
            continue
        fl = floor.get(r["events_per_batch"])
        ratio = f"{c['instructions_per_event'] / fl:.2f}" if fl else "–"
        rows.append(f"| {r['events_per_batch']} | {LABEL[r['server']]} | {c['events']:,} | "
                    f"{fmt_int(c['instructions_per_event'])} | {c['allocations_per_event']:.1f} | "
                    f"{ratio} |")
    return ("Whole process (every thread: listener, decode, parse, log writer, scorer, "
            f"librdkafka), counted by callgrind over {cost['duration']} s of open-loop HTTP/1.1 "
            "load after a warmup (counters zeroed before, dumped after), divided by the events "
            "accepted; allocations are calls of malloc, calloc and realloc:\n\n" + "\n".join(rows))


def short(line):
    """A profile line without this machine's paths (only the object file's name), cut at 160."""
    line = re.sub(r"\[(?:/[^\]]*/)?([^/\]]+)\]", r"[\1]", line)
    line = re.sub(r"(^|\s)\./(?:[^/\s]+/)*", r"\1", line)
    return line[:160]


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
        f"- Run: {m['date']}, commit `{m['commit']}`" + (" (BENCH_QUICK=1: short steps)" if res["quick"] else "")
        + (f"; {m['binaries']}" if m.get("binaries") else ""),
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
    text = replace(text, "ingest", ingest_tables(res))
    text = replace(text, "latency", latency_tables(res))
    text = replace(text, "decide", criterion_text())
    rows = ["| events/batch | JSON | gzip -6 | compact, no dictionary (a first page) | compact + the site's dictionary (as the tracker sends) | zstd -3 | zstd -3 + dictionary |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in by["rows"]:
        rows.append(f"| {r['events_per_batch']} | {r['json']:.0f} | {r['gzip']:.0f} | {r['tracker']:.0f} | "
                    f"{r['compact_dict']:.0f} | {r['zstd_3']:.0f} | {r['zstd_3_dict']:.0f} |")
    rows += ["", f"Bytes per event, mean of {by['batches']} batches per size, sent a second apart; the "
             f"dictionaries (zstd {by['dictionary_bytes']:,} bytes; compact {by['compact_dictionary_bytes']:,} "
             f"bytes, trained as the gateway trains a site's: texts at least 5 readers sent) come from "
             f"{by.get('trained_on', 3000):,} batches of other readers over the six hours before."]
    text = replace(text, "bytes", "\n".join(rows))
    mem = res["memory_kib"]
    rows = ["| process | peak RSS (VmHWM) after all ingest and latency runs |", "|---|---:|"]
    for name in ["gateway", "kafka", "floor"]:
        if mem.get(name):
            rows.append(f"| {LABEL[name]} | {fmt_int(mem[name] / 1024)} MiB |")
    text = replace(text, "memory", "\n".join(rows))
    if "<!-- BEGIN rss -->" in text:
        text = replace(text, "rss", rss_text())
    text = replace(text, "cost", cost_table())
    try:
        with open(f"{WORK}/profile.txt") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    # callgrind_annotate prints a header first; keep the table after its "file:function" line.
    marks = [i for i, l in enumerate(lines) if l.rstrip().endswith("file:function")]
    prof = "\n".join(short(l) for l in lines[marks[-1] + 2:] if l.strip()) if marks else "\n".join(lines)
    incl = ""
    try:
        with open(f"{WORK}/profile-inclusive.txt") as f:
            keep = [short(l) for l in f.read().splitlines()
                    if re.search(r"pulse_|fjall::|lsm_tree::|decompress_stream|rdkafka", l)]
        if keep:
            incl = ("\n\nInclusive cost of Pulse's own functions and the stores (callgrind):\n\n```\n"
                    + "\n".join(keep[:30]) + "\n```")
    except OSError:
        pass
    try:
        with open(f"{WORK}/profile-load.json") as f:
            pl = json.load(f)
        plr = pl["report"]
        load_line = (f"Load during the profile (measured part): `{pl['command']}` — "
                     f"{plr['requests']} requests, {plr['errors']} errors, p99 "
                     f"{plr['latency_ms']['p99']:.1f} ms (under callgrind).")
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        load_line = "Load during the profile: see scripts/bench_driver.py (report missing)."
    text = replace(text, "profile", f"{load_line}\n\nSelf cost, top entries (callgrind):\n\n```\n{prof}\n```{incl}")
    cmds = list(res["commands"])
    try:
        with open(f"{WORK}/cost.json") as f:
            cmds += [r["cost"]["command"] for r in json.load(f)["rows"] if r.get("cost")]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    text = replace(text, "commands", "```\n" + "\n".join(cmds) + "\n```")
    restored = restore_text()
    if restored:
        text = replace(text, "restore", restored)
    tiered = tier_text()
    if tiered:
        text = replace(text, "tier", tiered)
    with open(path, "w") as f:
        f.write(text)


# --- Memory over a long run of many readers ------------------------------------------------------

def vm_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, TypeError):
        pass
    return None


def cmd_rss():
    """1,000,000 distinct readers at half the sustainable rate (from load.json of this run or an
    earlier one), for BENCH_RSS_S seconds, sampling the gateway's RSS every 10 s."""
    pid, url = os.environ["RSS_PID"], os.environ["RSS_URL"]
    rate = None
    for path in (f"{WORK}/load.json", f"{ROOT}/target/bench/load.json"):
        try:
            with open(path) as f:
                g10 = next(r for r in json.load(f)["ingest"]
                           if r["proto"] == "h1" and r["events_per_batch"] == 10)
            if g10["gateway"].get("rate"):
                rate = round(g10["gateway"]["rate"] / 2, 1)
                break
        except (OSError, StopIteration, KeyError, json.JSONDecodeError):
            continue
    rate = float(os.environ.get("BENCH_RSS_RATE", rate or 1000))
    duration = int(os.environ.get("BENCH_RSS_S", "60" if QUICK else "900"))
    args = ["--proto", "h1", "--events-per-batch", 10, "--rate", rate, "--duration", duration,
            "--readers", 1000000] + workers("h1", False)
    cmd = [f"{BIN}/pulse-load", "--url", url, "--origin", url, "--json", "--quiet",
           "--timeout", "5", "--max-error-rate", "1"] + [str(a) for a in args]
    log(f"rss: {rate} req/s of 10 events, 1,000,000 readers, {duration} s")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        samples.append({"t": round(time.time() - started, 1), "rss_kib": vm_rss(pid)})
        time.sleep(10)
    out, err = proc.communicate()
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        log(f"pulse-load failed: {err.strip()[-400:]}")
        report = None
    res = {"rate": rate, "duration": duration, "samples": samples, "report": report,
           "peak_kib": vm_hwm(pid), "command": " ".join(cmd[1:]).replace(url, "$URL")}
    with open(f"{WORK}/rss.json", "w") as f:
        json.dump(res, f, indent=1)


def rss_text():
    try:
        with open(f"{WORK}/rss.json") as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError):
        return "Not measured in this run (`BENCH_PARTS=rss scripts/bench.sh`)."
    s = [x for x in r["samples"] if x.get("rss_kib")]
    if not s:
        return "No samples."
    last = [x["rss_kib"] for x in s if x["t"] >= r["duration"] - 600] or [s[-1]["rss_kib"]]
    rep = r.get("report") or {}
    lat = rep.get("latency_ms", {})
    rows = [f"The embedded gateway with its default config (`[scorer] cache_mb = 64`), "
            f"{r['rate']} req/s of 10-event batches from 1,000,000 distinct readers for "
            f"{r['duration']} s: {rep.get('requests', '?'):,} requests, {rep.get('errors', '?')} errors, "
            f"p99 {lat.get('p99', float('nan')):.2f} ms.", "",
            "| peak RSS (VmHWM) | RSS over the last 10 minutes: min | max | max / min |",
            "|---:|---:|---:|---:|",
            f"| {r['peak_kib'] / 1024:.0f} MiB | {min(last) / 1024:.0f} MiB | {max(last) / 1024:.0f} MiB "
            f"| {max(last) / min(last):.2f} |", "",
            "RSS every minute (MiB): " + ", ".join(f"{x['rss_kib'] / 1024:.0f}" for x in s[::6]), "",
            f"`{r['command']}`"]
    return "\n".join(rows)

# --- Restoring reader state from the state changelog (Kafka mode) -------------------------------

def metric_value(admin, series):
    req = urllib.request.Request(f"{admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def cmd_restore():
    """A Kafka-mode gateway takes `RESTORE_READERS` distinct readers (1-event batches), writes
    their state behind to the changelog and stops; a second gateway on an empty data folder
    restores it: its restore time, and per million readers."""
    readers = int(os.environ.get("RESTORE_READERS", "20000" if QUICK else "200000"))
    with open(os.environ["KAFKA_CONFIG"]) as f:
        base = f.read()
    cfg = f"{WORK}/pulse-restore.toml"
    with open(cfg, "w") as f:
        f.write(base + "\n[scorer]\nflush_interval_ms = 2000\n")
    gw = [f"{BIN}/gateway", "--config", cfg, "--log", "warn"]
    first, url, admin = start_server("restore-first", gw + ["--data", f"{WORK}/restore-a"],
                                     "pulse gateway listening on ")
    rate = 4000
    args = ["--proto", "h1", "--events-per-batch", "1", "--readers", str(readers),
            "--pool", str(readers), "--rate", str(rate), "--duration", f"{readers / rate:.1f}",
            "--warmup", "0", "--connections", "32"]
    report = load(url, args, record=False)
    written = metric_value(admin, "pulse_scorer_cached_readers")
    stop_server(first)
    started = time.monotonic()
    second, url2, admin2 = start_server("restore-second", gw + ["--data", f"{WORK}/restore-b"],
                                        "pulse gateway listening on ")
    ready = None
    for _ in range(6000):
        try:
            with urllib.request.urlopen(f"{url2}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    ready = time.monotonic() - started
                    break
        except OSError:
            pass
        time.sleep(0.05)
    states = metric_value(admin2, 'pulse_gateway_restored_records{source="changelog"}')
    took = metric_value(admin2, 'pulse_gateway_restore_duration_seconds{source="changelog"}')
    events = metric_value(admin2, 'pulse_gateway_restored_records{source="events"}')
    events_took = metric_value(admin2, 'pulse_gateway_restore_duration_seconds{source="events"}')
    stop_server(second)
    out = {"readers_sent": readers, "readers_in_memory": written, "states": states,
           "seconds": took, "events": events, "events_seconds": events_took,
           "ready_seconds": ready, "accepted": report.get("ok") if report else None,
           "command": "pulse-load --url $URL " + " ".join(args)}
    log(f"restore: {states:.0f} states in {took:.2f} s, ready after {ready} s")
    with open(f"{WORK}/restore.json", "w") as f:
        json.dump(out, f, indent=1)


def restore_text():
    try:
        with open(f"{WORK}/restore.json") as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    per_million = r["seconds"] / r["states"] * 1e6 if r["states"] else float("nan")
    ready = r["ready_seconds"]
    return "\n".join([
        "| batches sent (random readers of the pool) | reader states restored | changelog restore | per million readers | events replayed after it | start to ready |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {fmt_int(r['accepted'] or 0)} of {fmt_int(r['readers_sent'])} readers | {fmt_int(r['states'])} | {r['seconds']:.2f} s | "
        f"{per_million:.1f} s | {fmt_int(r['events'])} ({r['events_seconds']:.2f} s) | "
        + (f"{ready:.2f} s |" if ready is not None else "– |"),
        "", f"`{r['command']}`"])



def cmd_tier():
    """The split tier on the mock cluster: one gateway (cluster.role = gateway) in front of 1,
    2 and 3 scorers. For each: the most decisions per second a closed loop gets (32
    connections, 1-event batches), and the latency at a fixed open-loop rate."""
    with open(os.environ["KAFKA_CONFIG"]) as f:
        base = f.read()
    token = "bench-cluster-token-0123456789"
    dur, rate = (3, 100) if QUICK else (10, 300)
    results = []
    for n in (1, 2, 3):
        group = f"bench-scorers-{n}-{int(time.time())}"
        procs = []
        def cfg(name, role):
            path = f"{WORK}/tier-{name}.toml"
            with open(path, "w") as f:
                f.write(base + f"\n[scorer]\npartitions = 3\n\n[cluster]\nrole = \"{role}\"\n"
                        f"token = \"{token}\"\ngroup = \"{group}\"\n")
            return path
        for i in range(n):
            name = f"scorer{n}-{i}"
            proc, _, _ = start_server(name, [f"{BIN}/gateway", "--config", cfg(name, "scorer"),
                                             "--data", f"{WORK}/{name}", "--log", "warn"],
                                      "pulse gateway listening on ")
            procs.append(proc)
        name = f"tiergw{n}"
        gw, url, admin = start_server(name, [f"{BIN}/gateway", "--config", cfg(name, "gateway"),
                                             "--data", f"{WORK}/{name}", "--log", "warn"],
                                      "pulse gateway listening on ")
        procs.append(gw)
        settled = False
        for _ in range(1200):
            if (metric_value(admin, "pulse_tier_live_scorers") == n
                    and metric_value(admin, "pulse_tier_claimed_partitions") == 3):
                settled = True
                break
            time.sleep(0.1)
        log(f"tier: {n} scorer(s) settled: {settled}")
        common = ["--proto", "h1", "--events-per-batch", "1", "--readers", "20000",
                  "--pool", "20000", "--warmup", WARMUP]
        closed = load(url, common + ["--connections", 32, "--duration", dur])
        fb0 = metric_value(admin, "pulse_gateway_fallback_decisions_total")
        fixed = load(url, common + ["--connections", 64, "--rate", rate, "--duration", dur])
        fb1 = metric_value(admin, "pulse_gateway_fallback_decisions_total")
        results.append({"scorers": n, "settled": settled,
                        "max_per_s": closed["requests_per_s"] if closed else None,
                        "max_p99": closed["latency_ms"]["p99"] if closed else None,
                        "rate": rate, "rate_p50": fixed["latency_ms"]["p50"] if fixed else None,
                        "rate_p99": fixed["latency_ms"]["p99"] if fixed else None,
                        "rate_errors": fixed["errors"] if fixed else None,
                        "fallbacks": fb1 - fb0})
        log(f"tier {n}: {results[-1]}")
        for p in procs:
            stop_server(p)
    out = {"results": results, "commands": [
        "pulse-load --url $URL " + " ".join(str(a) for a in common + ["--connections", 32, "--duration", dur]),
        "pulse-load --url $URL " + " ".join(str(a) for a in common + ["--connections", 64, "--rate", rate, "--duration", dur])]}
    with open(f"{WORK}/tier.json", "w") as f:
        json.dump(out, f, indent=1)


def tier_text():
    try:
        with open(f"{WORK}/tier.json") as f:
            t = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    rows = t["results"]
    one = rows[0]["max_per_s"] or float("nan")
    lines = ["| scorers | decisions/s (closed loop, 32 connections) | ratio to one | p99 at that load | "
             f"p50 / p99 at {rows[0]['rate']} req/s | fallbacks at that rate |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["max_per_s"] is None:
            lines.append(f"| {r['scorers']} | – | – | – | – | – |")
            continue
        lines.append(f"| {r['scorers']} | {r['max_per_s']:,.0f} | {r['max_per_s'] / one:.2f} | "
                     f"{r['max_p99']:.1f} ms | {r['rate_p50']:.1f} / {r['rate_p99']:.1f} ms | "
                     f"{r['fallbacks']:.0f} |")
    lines += ["", "\n".join(f"`{c}`" for c in t["commands"])]
    return "\n".join(lines)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "load":
        cmd_load()
    elif what == "cost":
        cmd_cost()
    elif what == "rss":
        cmd_rss()
    elif what == "restore":
        cmd_restore()
    elif what == "tier":
        cmd_tier()
    elif what == "write":
        cmd_write()
    else:
        raise SystemExit(__doc__)

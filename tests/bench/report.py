#!/usr/bin/env python3
"""Turns the raw lines written by bench.sh into target/bench/results.{md,json}.

Each results line is {"target", "scenario", "result": <portcullis-loadgen --json>};
each memory line is {"target", "pid_kind", ...VmRSS figures in KB}. Ratios are
to the direct target of the same scenario (and, for the built-in chain, to the
empty chain: the cost of the policies themselves).
"""

import argparse
import json
import sys

TARGETS = ["direct", "empty", "tracing", "builtins"]
TARGET_LABEL = {
    "direct": "direct to upstream",
    "empty": "gateway, empty chain",
    "tracing": "gateway, empty chain, traces exported (OTLP/HTTP)",
    "builtins": "gateway, 4 built-ins",
}
SCENARIOS = [
    ("call-sat", "tools/call echo, saturation"),
    ("call-c1", "tools/call echo, 1 session"),
    ("call-64k", "tools/call 64 KB result"),
    ("list-c1", "tools/list 10x100 tools, 1 session"),
    ("list-sat", "tools/list 10x100 tools, saturation"),
    ("sessions-1k", "tools/call echo, 1,000 sessions"),
]
# Direct lists one upstream (100 tools), the gateway merges ten: no ratio to direct.
NO_DIRECT_RATIO = {"list-c1", "list-sat"}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    for name in ["results", "memory", "out-md", "out-json", "mode", "date", "nproc", "cpu",
                 "duration", "warmup", "sat", "loadgen-threads", "commit", "rustc", "loadavg"]:
        ap.add_argument("--" + name, required=True)
    a = ap.parse_args()

    runs = {(r["target"], r["scenario"]): r["result"] for r in load(a.results)}
    memory = {}
    for m in load(a.memory):
        memory.setdefault(m["target"], {}).update({k: v for k, v in m.items() if k != "target"})

    rows = []
    for scenario, _ in SCENARIOS:
        direct = runs.get(("direct", scenario))
        empty = runs.get(("empty", scenario))
        for target in TARGETS:
            r = runs.get((target, scenario))
            if r is None:
                continue
            row = {"scenario": scenario, "target": target, **r}
            if target != "direct" and direct and scenario not in NO_DIRECT_RATIO:
                row["rps_pct_of_direct"] = round(100.0 * r["rps"] / direct["rps"], 1) if direct["rps"] else None
                row["added_p50_us_vs_direct"] = r["p50_us"] - direct["p50_us"]
                row["added_p99_us_vs_direct"] = r["p99_us"] - direct["p99_us"]
            if target in ("builtins", "tracing") and empty:
                row["rps_pct_of_empty"] = round(100.0 * r["rps"] / empty["rps"], 1) if empty["rps"] else None
                row["added_p50_us_vs_empty"] = r["p50_us"] - empty["p50_us"]
            rows.append(row)

    def get(target, scenario, key):
        r = next((x for x in rows if x["target"] == target and x["scenario"] == scenario), None)
        return None if r is None else r.get(key)

    summary = []

    def add(measure, value, target, unit="", ok=None):
        summary.append({"measure": measure, "value": value, "unit": unit, "target": target, "met": ok})

    v = get("builtins", "call-sat", "rps_pct_of_direct")
    add("Throughput at saturation, gateway with built-ins (% of direct)", v, ">= 70 %", "%", None if v is None else v >= 70)
    v = get("empty", "call-sat", "rps_pct_of_direct")
    add("Throughput at saturation, gateway with empty chain (% of direct)", v, ">= 70 %", "%", None if v is None else v >= 70)
    v = get("empty", "call-c1", "added_p50_us_vs_direct")
    add("Added p50, 1 session, empty chain", v, "<= 100 us", "us", None if v is None else v <= 100)
    v = get("builtins", "call-c1", "added_p50_us_vs_direct")
    add("Added p50, 1 session, built-ins", v, "<= 150 us", "us", None if v is None else v <= 150)
    v = get("builtins", "call-c1", "added_p50_us_vs_empty")
    add("Four built-ins on one tools/call (p50 built-ins - empty, 1 session)", v, "<= 30 us", "us", None if v is None else v <= 30)
    v = get("tracing", "call-sat", "rps_pct_of_empty")
    add("Tracing on (OTLP/HTTP export) vs off: throughput at saturation (% of empty chain)", v, "(measured)", "%", None)
    v = get("tracing", "call-c1", "added_p50_us_vs_empty")
    add("Tracing on vs off: added p50, 1 session", v, "(measured)", "us", None)
    v = get("builtins", "list-c1", "added_p50_us_vs_empty")
    add("Four built-ins on a 1,000-tool tools/list (p50 built-ins - empty, 1 session)", v, "<= 1000 us", "us", None if v is None else v <= 1000)
    v = get("builtins", "call-64k", "rps_pct_of_direct")
    add("64 KB tools/call throughput, built-ins (% of direct)", v, "", "%")

    mem = memory.get("builtins") or memory.get("empty") or {}
    fresh, before, idle, load_kb, hwm = (mem.get(k) for k in
                                         ["rss_fresh_kb", "rss_before_kb", "rss_1k_idle_kb", "rss_1k_load_kb", "hwm_kb"])
    sessions = mem.get("sessions") or 1000
    per_session = None
    if idle is not None and before is not None:
        per_session = round((idle - before) / sessions, 1)
    mb = lambda kb: None if kb is None else round(kb / 1024, 1)  # noqa: E731
    add("Gateway RSS at idle (fresh, built-ins)", mb(fresh), "<= 40 MB", "MB", None if fresh is None else fresh <= 40 * 1024)
    add(f"Memory per idle session ({sessions} sessions, each with its connection)", per_session, "<= 50 KB", "KB",
        None if per_session is None else per_session <= 50)
    add(f"Gateway RSS with {sessions} idle sessions", mb(idle), "", "MB")
    add(f"Gateway RSS under load from {sessions} sessions", mb(load_kb), "", "MB")
    add("Gateway peak RSS (VmHWM) over the built-ins run", mb(hwm), "", "MB")

    meta = {
        "mode": a.mode, "date": a.date, "nproc": int(a.nproc), "cpu": a.cpu, "commit": a.commit,
        "rustc": a.rustc, "loadavg_at_start": a.loadavg, "duration_s": float(a.duration), "warmup_s": float(a.warmup),
        "saturation_sessions": int(a.sat), "loadgen_threads": int(a.loadgen_threads),
        "upstream": "portcullis-test-upstream --response json, 100 tools",
        "gateway": "10 connectors on that upstream, audit log at info to a file",
    }
    with open(a.out_json, "w") as f:
        json.dump({"meta": meta, "results": rows, "memory": memory, "summary": summary}, f, indent=2)
        f.write("\n")

    def fmt(v, unit=""):
        if v is None:
            return "-"
        if isinstance(v, float):
            v = f"{v:.1f}"
        return f"{v}{unit}"

    def signed(v):
        return "-" if v is None else f"{v:+d}"

    md = []
    md.append(f"## Benchmark ({a.mode} mode, {a.date})")
    md.append("")
    md.append(f"Machine: {a.nproc} cores, {a.cpu} (load average {a.loadavg} at start); commit {a.commit}; {a.rustc}.  ")
    md.append(f"Load: `portcullis-loadgen` ({a.loadgen_threads} thread), HTTP/1.1 keep-alive, one connection per "
              f"MCP session, {a.warmup} s warm-up + {a.duration} s per row; saturation = {a.sat} sessions. "
              "Everything (load generator, gateway, upstream) shares the same cores.  ")
    md.append("Upstream: `portcullis-test-upstream --response json` (100 tools); the gateway fronts it as 10 "
              "connectors (10 x 100 = 1,000 tools in the merged list).")
    md.append("")
    md.append("| Scenario | Target | Sessions | req/s | % of direct | p50 us | p90 us | p99 us | max us "
              "| p50 vs direct | p50 vs empty chain | Errors |")
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = dict(SCENARIOS)
    for r in rows:
        pct = r.get("rps_pct_of_direct")
        md.append("| " + " | ".join([
            labels[r["scenario"]],
            TARGET_LABEL[r["target"]] + (f" ({r.get('tools', '?')} tools)" if r["scenario"] in NO_DIRECT_RATIO else ""),
            str(r["sessions"]),
            f"{r['rps']:.0f}",
            "100" if r["target"] == "direct" else fmt(pct),
            str(r["p50_us"]), str(r["p90_us"]), str(r["p99_us"]), str(r["max_us"]),
            signed(r.get("added_p50_us_vs_direct")),
            signed(r.get("added_p50_us_vs_empty")),
            str(r["errors"]),
        ]) + " |")
    md.append("")
    md.append("| Measure | Value | Target |")
    md.append("|---|---:|---|")
    for s in summary:
        mark = "" if s["met"] is None else (" (met)" if s["met"] else " (missed)")
        md.append(f"| {s['measure']} | {fmt(s['value'], ' ' + s['unit'] if s['unit'] else '')} | {s['target']}{mark} |")
    up = memory.get("direct", {})
    if up:
        md.append("")
        md.append(f"Upstream for reference: RSS {fmt(mb(up.get('rss_fresh_kb')), ' MB')} fresh, "
                  f"{fmt(mb(up.get('rss_1k_idle_kb')), ' MB')} with {sessions} idle connections.")
    text = "\n".join(md) + "\n"
    with open(a.out_md, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

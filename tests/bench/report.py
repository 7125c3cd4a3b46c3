#!/usr/bin/env python3
"""Turns the raw lines written by bench.sh into target/bench/results.{md,json}.

Each results line is {"target", "scenario", "result": <portcullis-loadgen --json>};
each memory line is {"target", "pid_kind", ...VmRSS figures in KB}; each reloads
line {"target", "reload_took_ms": [...]}; each peer line says how the peer run went.
Ratios are to the direct target of the same scenario, to the empty chain (what
policies, quota, audit and tracing cost on top of the bare proxy), to the bare
gateway (quota + audit off) and to the peer gateway.
"""

import argparse
import json
import sys

TARGETS = ["direct", "nginx", "empty", "nopin", "stdio", "bare", "quota-audit", "quota-exact", "tracing", "builtins",
           "builtins-cold", "production", "peer"]
TARGET_LABEL = {
    "direct": "direct to upstream",
    "nginx": "nginx reverse proxy (reference: one plain proxy hop)",
    "empty": "gateway, empty chain",
    "nopin": "gateway, empty chain, tool_pinning = \"off\"",
    "stdio": "gateway, empty chain, the upstream over stdio (a process per session)",
    "bare": "gateway, empty chain, no quota, audit sink none",
    "quota-audit": "gateway, empty chain, Redis quota + SQLite audit",
    "quota-exact": "gateway, empty chain, Redis quota without blocks (reserve = 0) + SQLite audit",
    "tracing": "gateway, empty chain, traces exported (OTLP/HTTP)",
    "builtins": "gateway, 4 built-ins",
    "builtins-cold": "gateway, 4 built-ins, every decision evaluated (cache_decisions = false)",
    "production": "gateway, production shape (4 built-ins + Redis quota + SQLite audit)",
    "peer": "peer: mcp-contextforge-gateway",
}
SCENARIOS = [
    ("call-sat", "tools/call echo, saturation"),
    ("call-c1", "tools/call echo, 1 session"),
    ("call-64k", "tools/call 64 KB result"),
    ("list-c1", "tools/list 10x100 tools, 1 session"),
    ("list-sat", "tools/list 10x100 tools, saturation"),
    ("sessions-1k", "tools/call echo, 1,000 sessions"),
    ("reload-load", "tools/call echo, saturation, config hot-reloaded every 0.5 s"),
    ("call-delay", "tools/call echo, upstream answering in 5 ms, 64 sessions"),
    ("read-16", "resources/read (text), 16 sessions"),
    ("get-16", "prompts/get with an argument, 16 sessions"),
]
# Direct lists one upstream (100 tools), the gateway merges ten: no ratio to direct.
NO_DIRECT_RATIO = {"list-c1", "list-sat"}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    for name in ["results", "memory", "reloads", "peer", "out-md", "out-json", "mode", "date", "nproc", "cpu",
                 "duration", "warmup", "sat", "loadgen-threads", "commit", "rustc", "loadavg"]:
        ap.add_argument("--" + name, required=True)
    a = ap.parse_args()

    # A (target, scenario) measured more than once (issue 4's pair alternates three
    # times): keep the run with the median throughput, and say how many there were.
    grouped = {}
    for r in load(a.results):
        grouped.setdefault((r["target"], r["scenario"]), []).append(r["result"])
    runs = {}
    for key, results in grouped.items():
        ordered = sorted(results, key=lambda x: x["rps"])
        chosen = dict(ordered[len(ordered) // 2])
        if len(results) > 1:
            chosen["runs"] = len(results)
            chosen["rps_all"] = [x["rps"] for x in results]
            chosen["p50_all"] = [x["p50_us"] for x in results]
        runs[key] = chosen
    memory = {}
    for m in load(a.memory):
        memory.setdefault(m["target"], {}).update({k: v for k, v in m.items() if k != "target"})

    reloads = {r["target"]: r for r in load(a.reloads)}
    peer_status = {}
    for r in load(a.peer):
        peer_status.setdefault("lines", []).append(r)

    def pct(x, y):
        return round(100.0 * x / y, 1) if y else None

    rows = []
    for scenario, _ in SCENARIOS:
        direct = runs.get(("direct", scenario))
        empty = runs.get(("empty", scenario))
        bare = runs.get(("bare", scenario))
        peer = runs.get(("peer", scenario))
        for target in TARGETS:
            r = runs.get((target, scenario))
            if r is None:
                continue
            row = {"scenario": scenario, "target": target, **r}
            if target != "direct" and direct and scenario not in NO_DIRECT_RATIO:
                row["rps_pct_of_direct"] = pct(r["rps"], direct["rps"])
                row["added_p50_us_vs_direct"] = r["p50_us"] - direct["p50_us"]
                row["added_p99_us_vs_direct"] = r["p99_us"] - direct["p99_us"]
            if target not in ("direct", "nginx", "empty", "peer") and empty:
                row["rps_pct_of_empty"] = pct(r["rps"], empty["rps"])
                row["added_p50_us_vs_empty"] = r["p50_us"] - empty["p50_us"]
                mine, base = r.get("p50_all"), empty.get("p50_all")
                if mine and base and len(mine) == len(base):
                    # Alternating rounds: the difference within each round, then the median.
                    diffs = sorted(m - b for m, b in zip(mine, base))
                    row["added_p50_us_vs_empty_rounds"] = diffs
                    row["added_p50_us_vs_empty"] = diffs[len(diffs) // 2]
            if target in ("quota-audit", "quota-exact") and bare:
                row["rps_pct_of_bare"] = pct(r["rps"], bare["rps"])
                row["added_p50_us_vs_bare"] = r["p50_us"] - bare["p50_us"]
                ons, offs = r.get("rps_all"), bare.get("rps_all")
                if ons and offs and len(ons) == len(offs):
                    # Alternating rounds: the ratio within each round, then the median.
                    ratios = sorted(pct(on, off) for on, off in zip(ons, offs))
                    row["rps_pct_of_bare_rounds"] = ratios
                    row["rps_pct_of_bare"] = ratios[len(ratios) // 2]
            if target == "production" and peer and peer["rps"]:
                row["rps_x_peer"] = round(r["rps"] / peer["rps"], 1)
                row["p99_us_peer"] = peer["p99_us"]
            rows.append(row)
    prod_sat = runs.get(("production", "call-sat"))
    reload_row = next((x for x in rows if x["target"] == "production" and x["scenario"] == "reload-load"), None)
    if reload_row and prod_sat:
        reload_row["p99_us_without_reloads"] = prod_sat["p99_us"]
        reload_row["rps_pct_of_no_reload"] = pct(reload_row["rps"], prod_sat["rps"])

    def get(target, scenario, key):
        r = next((x for x in rows if x["target"] == target and x["scenario"] == scenario), None)
        return None if r is None else r.get(key)

    summary = []

    def add(measure, value, target, unit="", ok=None):
        summary.append({"measure": measure, "value": value, "unit": unit, "target": target, "met": ok})

    def met(v, ok):
        return None if v is None else ok(v)

    # The floor: what one plain proxy hop (nginx, no parsing) costs on this machine.
    v = get("nginx", "call-c1", "added_p50_us_vs_direct")
    add("Reference: nginx reverse proxy, added p50, 1 session", v, "(measured)", "us")
    v = get("nginx", "call-sat", "rps_pct_of_direct")
    add("Reference: nginx reverse proxy, throughput at saturation (% of direct)", v, "(measured)", "%")
    # Issue 2: the gateway core (empty chain).
    v = get("empty", "call-c1", "added_p50_us_vs_direct")
    add("Gateway core: added p50, 1 session, empty chain", v, "<= 100 us", "us", met(v, lambda x: x <= 100))
    v = get("empty", "call-sat", "rps_pct_of_direct")
    add("Gateway core: throughput at saturation, empty chain (% of direct)", v, ">= 70 %", "%", met(v, lambda x: x >= 70))
    # Issue 3: what the four built-ins cost.
    v = get("builtins", "call-c1", "added_p50_us_vs_empty")
    n = get("builtins", "call-c1", "runs") or 1
    add(f"Four built-ins on one tools/call, decisions reused (p50 - empty chain, 1 session; median over {n} "
        "alternating rounds)", v, "<= 30 us", "us",
        met(v, lambda x: x <= 30))
    v = get("builtins-cold", "call-c1", "added_p50_us_vs_empty")
    add("Four built-ins on one tools/call, every decision evaluated (p50 - empty chain)", v, "(measured)", "us")
    v = get("builtins", "list-c1", "added_p50_us_vs_empty")
    add("Four built-ins on a 1,000-tool tools/list, decisions reused (p50 - empty chain)", v, "<= 1000 us", "us",
        met(v, lambda x: x <= 1000))
    v = get("builtins-cold", "list-c1", "added_p50_us_vs_empty")
    add("Four built-ins on a 1,000-tool tools/list, every decision evaluated (p50 - empty chain)", v,
        "(measured)", "us")
    took = (reloads.get("production") or {}).get("reload_took_ms") or []
    if took:
        st = sorted(took)
        add(f"Config reload time, median of {len(st)} (4 or 5 built-ins; redact-secrets compiled afresh "
            "every other time)", st[len(st) // 2], "(measured)", "ms")
        add("Config reload time, slowest", st[-1], "(measured)", "ms")
    # Issue 22: what tool pinning costs a tools/list (screening happens once per
    # catalog version, so the served list should cost the same).
    v = get("nopin", "list-c1", "added_p50_us_vs_empty")
    n = get("nopin", "list-c1", "runs") or 1
    add(f"Tool pinning on vs off, 1,000-tool tools/list: p50 (on - off; median over {n} alternating rounds)",
        None if v is None else -v, "not measurable", "us")
    # Issue 4: Redis quota + SQLite audit against both off.
    v = get("quota-audit", "call-sat", "rps_pct_of_bare")
    n = get("quota-audit", "call-sat", "runs") or 1
    add(f"Redis quota + audit on vs off: throughput at saturation (% of off; median over {n} alternating rounds)",
        v, ">= 85 %", "%", met(v, lambda x: x >= 85))
    v = get("quota-audit", "call-c1", "added_p50_us_vs_bare")
    add("Redis quota + audit on vs off: added p50, 1 session", v, "(measured)", "us")
    v = get("quota-exact", "call-sat", "rps_pct_of_bare")
    n = get("quota-exact", "call-sat", "runs") or 1
    add(f"The same without blocks (reserve = 0: every check to Redis), % of off; median over {n} rounds",
        v, "(measured)", "%")
    # Issue 5: the production shape, the peer, reloads under load.
    v = get("production", "call-sat", "rps_pct_of_direct")
    add("Production shape: throughput at saturation (% of direct)", v, ">= 70 %", "%", met(v, lambda x: x >= 70))
    v = get("production", "call-c1", "added_p50_us_vs_direct")
    add("Production shape: added p50, 1 session", v, "<= 150 us", "us", met(v, lambda x: x <= 150))
    v = get("production", "call-sat", "rps_x_peer")
    add("Production shape vs peer gateway: throughput at saturation (x peer)", v, ">= 20 x", "x", met(v, lambda x: x >= 20))
    p99, peer99 = get("production", "call-sat", "p99_us"), get("production", "call-sat", "p99_us_peer")
    add("Production shape vs peer gateway: p99 at saturation (us, production / peer)",
        None if peer99 is None else f"{p99} / {peer99}", "lower than the peer", "",
        None if peer99 is None or p99 is None else p99 < peer99)
    v = get("production", "reload-load", "errors")
    add("Config reloads every 0.5 s under load: failed requests", v, "0", "", met(v, lambda x: x == 0))
    v = get("production", "reload-load", "p99_us")
    w = get("production", "reload-load", "p99_us_without_reloads")
    add("Config reloads every 0.5 s under load: p99 (us, with reloads / without)", None if v is None else f"{v} / {w}", "(measured)", "")
    v = get("tracing", "call-sat", "rps_pct_of_empty")
    add("Tracing on (OTLP/HTTP export) vs off: throughput at saturation (% of empty chain)", v, "(measured)", "%", None)
    v = get("tracing", "call-c1", "added_p50_us_vs_empty")
    add("Tracing on vs off: added p50, 1 session", v, "(measured)", "us", None)
    v = get("production", "call-64k", "rps_pct_of_direct")
    add("64 KB tools/call throughput, production shape (% of direct)", v, "", "%")
    v = get("production", "call-delay", "rps_pct_of_direct")
    add("Upstream answering in 5 ms, 64 sessions: production shape throughput (% of direct)", v, "(measured)", "%")
    v = get("production", "call-delay", "added_p50_us_vs_direct")
    add("Upstream answering in 5 ms, 64 sessions: production shape added p50", v, "(measured)", "us")
    # What bounds throughput on shared cores: CPU time per request of each process.
    for target in ["direct", "nginx", "empty", "production", "peer"]:
        parts = [(k, get(target, "call-sat", f"{k}_cpu_us_per_req")) for k in ["loadgen", "gateway", "upstream"]]
        parts = [(k, x) for k, x in parts if x is not None]
        if parts:
            total = sum(x for _, x in parts)
            add(f"CPU per tools/call at saturation, {target}: " + " + ".join(f"{k} {x}" for k, x in parts),
                total, "(measured)", "us")

    mem = memory.get("production") or memory.get("empty") or {}
    fresh, before, idle, load_kb, hwm = (mem.get(k) for k in
                                         ["rss_fresh_kb", "rss_before_kb", "rss_1k_idle_kb", "rss_1k_load_kb", "hwm_kb"])
    sessions = mem.get("sessions") or 1000
    per_session = None
    if idle is not None and before is not None:
        per_session = round((idle - before) / sessions, 1)
    mb = lambda kb: None if kb is None else round(kb / 1024, 1)  # noqa: E731
    add("Gateway RSS at idle (fresh, production shape)", mb(fresh), "<= 40 MB", "MB", None if fresh is None else fresh <= 40 * 1024)
    add(f"Memory per idle session ({sessions} sessions, each with its connection)", per_session, "<= 50 KB", "KB",
        None if per_session is None else per_session <= 50)
    add(f"Gateway RSS with {sessions} idle sessions", mb(idle), "", "MB")
    add(f"Gateway RSS under load from {sessions} sessions", mb(load_kb), "", "MB")
    add("Gateway peak RSS (VmHWM) over the production run", mb(hwm), "", "MB")
    pm = memory.get("peer") or {}
    if pm.get("rss_fresh_kb"):
        add("Peer gateway RSS at idle (all its processes)", mb(pm.get("rss_fresh_kb")), "", "MB")
    skipped = [x for x in peer_status.get("lines", []) if "skipped" in x or "failed" in x]

    meta = {
        "mode": a.mode, "date": a.date, "nproc": int(a.nproc), "cpu": a.cpu, "commit": a.commit,
        "rustc": a.rustc, "loadavg_at_start": a.loadavg, "duration_s": float(a.duration), "warmup_s": float(a.warmup),
        "saturation_sessions": int(a.sat), "loadgen_threads": int(a.loadgen_threads),
        "upstream": "portcullis-test-upstream --response json, 100 tools",
        "gateway": "10 connectors on that upstream, audit log at info to a file",
    }
    meta["peer"] = next((x.get("version") for x in peer_status.get("lines", []) if x.get("version")), None)
    with open(a.out_json, "w") as f:
        json.dump({"meta": meta, "results": rows, "memory": memory, "reloads": reloads,
                   "peer_status": peer_status.get("lines", []), "summary": summary}, f, indent=2)
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
    if meta["peer"]:
        md.append(f"Peer: {meta['peer']} (tests/bench/peer/).")
    for x in skipped:
        md.append(f"Peer: {x.get('skipped') or ('failed ' + x.get('scenario', '') + ': ' + x.get('failed', ''))}.")
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

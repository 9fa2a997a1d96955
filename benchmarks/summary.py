#!/usr/bin/env python3
"""Reads the JSON that scripts/bench.sh keeps and prints the tables and ratios
of BENCHMARKS.md, each next to its target. Usage: summary.py RESULTS_DIR"""
import json
import os
import sys


def load(directory, name):
    path = os.path.join(directory, name + ".json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["benchmarks"]


def verdict(ok):
    return "met" if ok else "MISSED"


def hot_path(runs):
    # Google Benchmark reports wall time divided by threads; one call on one
    # thread costs real_time * threads.
    per_call = {}
    for r in runs:
        if r.get("aggregate_name") != "median":
            continue
        family = r["run_name"].split("/")[1]
        per_call[(family, r["threads"])] = r["real_time"] * r["threads"]
    if not per_call:
        return
    threads = sorted({t for _, t in per_call})
    families = ["limit", "limit_steady", "tokmgr", "tokmgr_ec", "mutex", "shared_mutex", "atomic_shared_ptr"]
    print("1. hot path: ns per get_token call on one thread (median of 5)")
    print("   %-18s" % "family" + "".join("%12s" % ("%d thread%s" % (t, "s" if t > 1 else "")) for t in threads)
          + "%10s" % "2t/1t")
    for f in families:
        if (f, 1) not in per_call:
            continue
        row = "".join("%12.1f" % per_call[(f, t)] for t in threads)
        print("   %-18s%s%10.2f" % (f, row, per_call[(f, 2)] / per_call[(f, 1)]))
    if ("tokmgr", 1) in per_call:
        tk1, tk2 = per_call[("tokmgr", 1)], per_call[("tokmgr", 2)]
        r = tk1 / per_call[("limit", 1)]
        print("   tokmgr / limit (coarse clock), 1 thread: %.2f (target <= 1.5: %s)" % (r, verdict(r <= 1.5)))
        if ("limit_steady", 1) in per_call:
            print("   limit / limit_steady, 1 thread: %.2f (what the coarse clock saves)"
                  % (per_call[("limit", 1)] / per_call[("limit_steady", 1)]))
        r = tk2 / tk1
        print("   tokmgr 2-thread / 1-thread per call: %.2f (target <= 1.2: %s)" % (r, verdict(r <= 1.2)))
        for peer in ["mutex", "shared_mutex", "atomic_shared_ptr"]:
            r1, r2 = per_call[(peer, 1)] / tk1, per_call[(peer, 2)] / tk2
            target = " (target >= 20 at 2 threads: %s)" % verdict(r2 >= 20) if peer != "atomic_shared_ptr" else ""
            print("   %s / tokmgr: %.1fx at 1 thread, %.1fx at 2 threads%s" % (peer, r1, r2, target))
    print()


def single_flight(runs):
    if not runs:
        return
    rows = {}
    for r in runs:
        kind, size = r["run_name"].split("/")[1], int(r["run_name"].split("/")[2])
        rows[(kind, size)] = r
    print("2. single flight: a crowd released at a due refresh, transport takes 1 ms")
    print("   %6s %18s %12s %12s %12s %18s" % ("crowd", "calls/refresh", "mean us", "p50 us", "max us",
                                              "wake floor p50 us"))
    for size in sorted({s for _, s in rows}):
        t = rows.get(("tokmgr", size))
        w = rows.get(("wake_floor", size))
        if t is None:
            continue
        print("   %6d %18.2f %12.1f %12.1f %12.1f %18s" % (
            size, t["calls_per_refresh"], t["real_time"], t["last_p50_us"], t["last_max_us"],
            "%.1f" % w["last_p50_us"] if w else "-"))
    ones = all(abs(r["calls_per_refresh"] - 1) < 1e-9 for (k, _), r in rows.items() if k == "tokmgr")
    print("   exactly 1 transport call per refresh at every size: %s" % verdict(ones))
    big = rows.get(("tokmgr", 1000))
    if big:
        print("   last of 1,000 waiters released %.0f us (median round) after the answer (target <= 1000: %s)"
              % (big["last_p50_us"], verdict(big["last_p50_us"] <= 1000)))
    print()


def round_trip(runs):
    if not runs:
        return
    rows = {r["run_name"].rsplit("/iterations", 1)[0]: r for r in runs}
    print("3. refresh round trip over loopback (us)")
    print("   %-40s %10s %10s %10s" % ("", "mean", "p50", "p99"))
    for name, r in rows.items():
        print("   %-40s %10.1f %10.1f %10.1f" % (name, r["real_time"], r["p50_us"], r["p99_us"]))
    for scheme in ["http", "https"]:
        a, c = rows.get("round_trip/tokmgr_asio/" + scheme), rows.get("round_trip/libcurl/" + scheme)
        if a and c:
            r = a["p50_us"] / c["p50_us"]
            print("   Asio / libcurl p50, keep-alive %s: %.2f (target <= 1.0: %s)" % (scheme, r, verdict(r <= 1.0)))
    for t in ["tokmgr_asio", "libcurl"]:
        res, full = rows.get("reconnect/%s/https_resumed" % t), rows.get("reconnect/%s/https_full" % t)
        keep = rows.get("round_trip/%s/https" % t)
        if res and full and keep:
            print("   %s: a new TLS connection costs %.0f us resumed, %.0f us with a full handshake (p50, over keep-alive)"
                  % (t, res["p50_us"] - keep["p50_us"], full["p50_us"] - keep["p50_us"]))
    print()


def service(directory):
    path = os.path.join(directory, "bench_service.json")
    if not os.path.exists(path):
        return
    data = json.load(open(path))
    print("3d. tokmgr inside a service: %d threads, keep-alive GETs, medians of %d alternating rounds of %g s"
          % (data["threads"], data["rounds"], data["round_seconds"]))
    print("   %-10s %14s %14s %12s %10s %12s %10s" % ("lifetime", "fixed req/s", "managed req/s", "by rate",
                                                     "noise", "by time", "refreshes"))
    for r in data["results"]:
        print("   %-10s %14.0f %14.0f %11.2f%% %9.1f%% %11.4f%% %10d" % (
            r["lifetime"], r["fixed_rps"], r["managed_rps"], r["overhead_percent"], r["fixed_spread_percent"],
            r["time_share_percent"], r["refreshes"]))
        target = 1.0 if r["lifetime"] == "30 min" else 2.0
        print("   %s: tokmgr's share of a request, by time, %.4f%% (target < %g%%: %s); by rate %.2f%%, within a"
              " noise of %.1f%%" % (r["lifetime"], r["time_share_percent"], target,
                                    verdict(r["time_share_percent"] < target), r["overhead_percent"],
                                    r["fixed_spread_percent"]))
    print()


def main():
    directory = sys.argv[1]
    hot_path(load(directory, "bench_hot_path"))
    single_flight(load(directory, "bench_single_flight"))
    round_trip(load(directory, "bench_round_trip"))
    service(directory)
    path = os.path.join(directory, "compile_time.txt")
    if os.path.exists(path):
        table = open(path).read().split("compile_time ", 1)[-1].strip()
        print("4. compile time " + table.replace("\n", "\n   "))
        print("   targets: tokmgr's share under 40% header-only, under 10% with TOKMGR_SEPARATE_COMPILATION")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sums an ncu --csv run (metric gpu__time_duration.sum) by kernel name: the share of GPU time each
kernel family takes in a bench run (tests/cuda/h200_session.sh, step prof).
    ncu_summary.py RUN.csv [TOP]"""
import csv, sys, collections

rows = [r for r in csv.reader(l for l in open(sys.argv[1], errors="replace") if l.startswith('"'))]
head, rows = rows[0], rows[1:]
ki, mi, vi, ui, gi, bi = (head.index(k) for k in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit",
                                                  "Grid Size", "Block Size"))
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
tot, cnt = collections.Counter(), collections.Counter()
for r in rows:
    if r[mi] != "gpu__time_duration.sum":
        continue
    name = r[ki].split("(")[0] + " " + r[gi] + "x" + r[bi]   # grid x block: one shape per line
    tot[name] += float(r[vi].replace(",", "")) * scale.get(r[ui], 1.0)
    cnt[name] += 1
allt = sum(tot.values()) or 1.0
print(f"{'kernel grid x block':58s} {'calls':>7s} {'total us':>10s} {'mean us':>9s} {'share':>6s}")
for name, t in tot.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 30):
    print(f"{name[:58]:58s} {cnt[name]:7d} {t:10.1f} {t / cnt[name]:9.2f} {100 * t / allt:5.1f}%")
print(f"{'all':58s} {sum(cnt.values()):7d} {allt:10.1f}")

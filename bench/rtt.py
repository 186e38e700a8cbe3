#!/usr/bin/env python3
"""Percentiles of sipp's per-call response times (-trace_rtt CSV files), in ms.

Usage: rtt.py FILE... -> prints "p50 p99 count".
"""
import sys

values = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            parts = line.strip().split(";")
            if len(parts) < 2:
                continue
            try:
                values.append(float(parts[1]))
            except ValueError:
                continue  # header line
values.sort()
if not values:
    print("nan nan 0")
else:
    def q(p):
        return values[min(len(values) - 1, int(p * len(values)))]
    print(f"{q(0.50):.2f} {q(0.99):.2f} {len(values)}")

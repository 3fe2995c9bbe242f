#!/usr/bin/env python3
"""Reads wrk --latency output on stdin; prints 'rps p50_ms p99_ms requests'."""
import re
import sys

text = sys.stdin.read()


def ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
requests = re.search(r"(\d+) requests in", text).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit(f"wrk saw {errors.group(1)} non-2xx answers:\n{text}")
print(f"{float(rps):.0f} {p50:.2f} {p99:.2f} {requests}")

#!/usr/bin/env python3
"""Writes bench/RESULTS.md (on stdout) from the figures bench/run.sh recorded.

    report.py DATA BENCH_DIR

DATA holds one measurement a line, `KEY VALUE`; a key measured in several
rounds gets its median. BENCH_DIR/CHANGES.md and BENCH_DIR/NOTES.md are
appended as they are."""
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# Cloud Run request-based billing, tier 1, per vCPU-second: the pricing page,
# https://cloud.google.com/run/pricing (read 2026-11-30).
PRICE = 0.000024
PRICE_SOURCE = ("$0.000024 per vCPU-second: Cloud Run request-based billing, tier 1, "
                "from <https://cloud.google.com/run/pricing> (read 2026-11-30); the vCPU is "
                "billed while requests are in flight, so at saturation one vCPU costs its "
                "wall-clock time")

values: dict[str, list[str]] = defaultdict(list)
for line in Path(sys.argv[1]).read_text().splitlines():
    key, _, value = line.partition(" ")
    values[key].append(value)
bench = Path(sys.argv[2])


def num(key: str) -> float | None:
    """The median of a numeric key, or None when it was not measured."""
    try:
        return statistics.median(float(v) for v in values[key]) if values.get(key) else None
    except ValueError:
        return None


def text(key: str, default: str = "-") -> str:
    return values[key][-1] if values.get(key) else default


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}".replace(",", " ")


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def mb(x: float | None, unit: float = 1e6) -> str:
    return "-" if x is None else f"{x / unit:.1f} MB"


def kb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1024:.1f} MB"


def per_million(rps: float | None) -> str:
    if not rps:
        return "-"
    seconds = 1e6 / rps
    return f"{seconds:.1f} vCPU-s = ${seconds * PRICE:.5f}"


def cpu_million(us: float | None) -> str:
    # µs per request x 1e6 requests = that many vCPU-seconds
    return "-" if us is None else f"{us:.1f} vCPU-s = ${us * PRICE:.5f}"


def count(key: str) -> int:
    return len(values.get(key, []))


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**met**" if ok else "**missed**")


out: list[str] = []
w = out.append

rounds = count("pinned.recv.rust.c64.rps")
starts = count("start.receiver.rust")
w("# Benchmark results")
w("")
w(f"Written by `bench/run.sh` on {text('meta.date')}, commit `{text('meta.commit')}`; "
  f"{text('meta.seconds')} s of measuring ({text('meta.total_seconds')} s with the builds).")
w(f"Machine: {text('meta.machine')}.")
w(f"Settings: `{text('meta.settings')}`. Loopback only; every figure is the median of "
  f"{rounds} rounds of `wrk -t1 -d{text('meta.duration')} --latency` (cold starts: of {starts} "
  "starts), Rust, Go and the bare hyper reference alternating within each round.")
w(f"Rust binaries: {text('meta.build')}. Go: the tutorial's programs, built by the seed's "
  f"`build.sh` ({text('meta.go')}). Bare hyper: `bench/hello-hyper`, hyper 1 auto (HTTP/1.1 "
  "and h2c), opt-level 3, fat LTO, one codegen unit, panic abort; no logging, routing, "
  "timers or limits.")
w("Both senders get tokens from `metadata-emulator` (RS256, 2048-bit key) through "
  "`GCE_METADATA_HOST`; the Go sender asks for one per request.")
w(f"Price: {PRICE_SOURCE}.")
w("")

# --- one vCPU -----------------------------------------------------------------
P = "pinned"
r, g, h = (num(f"{P}.recv.{s}.c64.rps") for s in ("rust", "go", "hyper"))
rc, gc, hc = (num(f"{P}.recv.{s}.c64.cpu_0") for s in ("rust", "go", "hyper"))
cr, cg = num(f"{P}.chain.rust.rps"), num(f"{P}.chain.go.rps")
sc_r, sc_g = num(f"{P}.chain.rust.cpu_0"), num(f"{P}.chain.go.cpu_0")
rc_r, rc_g = num(f"{P}.chain.rust.cpu_1"), num(f"{P}.chain.go.cpu_1")


def lat(prefix: str) -> str:
    p50, p99 = num(f"{prefix}.p50"), num(f"{prefix}.p99")
    return "-" if p50 is None else f"{p50:.2f} / {p99:.2f}"


w("## One vCPU (the shape Cloud Run bills)")
w("")
w("Each server under test is pinned to one core (`taskset -c SERVER_CPU`; tokio and Go size "
  "their thread pools from it), `wrk -t1 -c64` and the metadata emulator to the other. In the "
  "chain the sender and the receiver share the one core. CPU per request: the process's "
  "utime+stime over the run, divided by the requests wrk completed.")
w("")
w("| figure | Rust | Go | bare hyper | Rust / Go | Rust / hyper |")
w("|---|---|---|---|---|---|")
w(f"| receiver requests/s | {fmt(r)} | {fmt(g)} | {fmt(h)} | {ratio(r, g)} | {ratio(r, h)} |")
w(f"| receiver CPU per request (µs) | {fmt(rc, 2)} | {fmt(gc, 2)} | {fmt(hc, 2)} | "
  f"{ratio(rc, gc)} | {ratio(rc, hc)} |")
w(f"| receiver p50 / p99 latency (ms) | {lat(f'{P}.recv.rust.c64')} | {lat(f'{P}.recv.go.c64')} | "
  f"{lat(f'{P}.recv.hyper.c64')} | | |")
w(f"| **receiver: 1 million requests at saturation** (1e6 / requests/s) | {per_million(r)} | "
  f"{per_million(g)} | {per_million(h)} | {ratio(g, r) if r else '-'} | {ratio(h, r) if r else '-'} |")
w(f"| receiver: CPU used by 1 million requests | {cpu_million(rc)} | {cpu_million(gc)} | "
  f"{cpu_million(hc)} | | |")
w(f"| chain requests/s (sender -> receiver, one core) | {fmt(cr)} | {fmt(cg)} | | {ratio(cr, cg)} | |")
w(f"| sender CPU per relayed request (µs) | {fmt(sc_r, 2)} | {fmt(sc_g, 2)} | | {ratio(sc_r, sc_g)} | |")
w(f"| receiver CPU per request in the chain (µs) | {fmt(rc_r, 2)} | {fmt(rc_g, 2)} | | | |")
w(f"| sender CPU per relayed request / receiver CPU per request alone | {ratio(sc_r, rc)} | "
  f"{ratio(sc_g, gc)} | | | |")
w(f"| chain p50 / p99 latency (ms) | {lat(f'{P}.chain.rust')} | {lat(f'{P}.chain.go')} | | | |")
w(f"| **chain: 1 million requests at saturation**, both services | {per_million(cr)} | "
  f"{per_million(cg)} | | {ratio(cg, cr) if cr else '-'} | |")
chain_cpu_r = None if sc_r is None or rc_r is None else sc_r + rc_r
chain_cpu_g = None if sc_g is None or rc_g is None else sc_g + rc_g
w(f"| chain: CPU used by 1 million requests (sender + receiver) | {cpu_million(chain_cpu_r)} | "
  f"{cpu_million(chain_cpu_g)} | | | |")
w("")

# --- shared -------------------------------------------------------------------
S = "shared"
w("## Shared cores (nothing pinned)")
w("")
w("The servers and `wrk -t1` share both cores, as in the earlier runs: the load generator "
  "takes most of one core, so this shape understates the ratios.")
w("")
w("| figure | Rust | Go | bare hyper | Rust / Go | Rust / hyper |")
w("|---|---|---|---|---|---|")
for c in (64, 256):
    a, b, hh = (num(f"{S}.recv.{s}.c{c}.rps") for s in ("rust", "go", "hyper"))
    ca, cb, ch = (num(f"{S}.recv.{s}.c{c}.cpu_0") for s in ("rust", "go", "hyper"))
    w(f"| receiver requests/s, -c{c} | {fmt(a)} | {fmt(b)} | {fmt(hh)} | {ratio(a, b)} | {ratio(a, hh)} |")
    w(f"| receiver CPU per request (µs), -c{c} | {fmt(ca, 2)} | {fmt(cb, 2)} | {fmt(ch, 2)} | "
      f"{ratio(ca, cb)} | {ratio(ca, ch)} |")
    w(f"| receiver p50 / p99 latency (ms), -c{c} | {lat(f'{S}.recv.rust.c{c}')} | "
      f"{lat(f'{S}.recv.go.c{c}')} | {lat(f'{S}.recv.hyper.c{c}')} | | |")
a, b = num(f"{S}.chain.rust.rps"), num(f"{S}.chain.go.rps")
w(f"| chain requests/s, -c64 | {fmt(a)} | {fmt(b)} | | {ratio(a, b)} | |")
w(f"| sender / receiver CPU per request in the chain (µs) | {fmt(num(f'{S}.chain.rust.cpu_0'), 2)} / "
  f"{fmt(num(f'{S}.chain.rust.cpu_1'), 2)} | {fmt(num(f'{S}.chain.go.cpu_0'), 2)} / "
  f"{fmt(num(f'{S}.chain.go.cpu_1'), 2)} | | | |")
w(f"| chain p50 / p99 latency (ms) | {lat(f'{S}.chain.rust')} | {lat(f'{S}.chain.go')} | | | |")


def calls(side: str) -> str:
    c = sum(int(v) for k in (f"{P}.calls.{side}", f"{S}.calls.{side}") for v in values.get(k, []))
    n = sum(int(v) for k in (f"{P}.requests.{side}", f"{S}.requests.{side}") for v in values.get(k, []))
    return "-" if not n else f"{c * 5000 / n:.0f} ({c} calls for {n} requests)"


w(f"| metadata calls per 5 000 sender requests (both shapes) | {calls('rust')} | {calls('go')} | | | |")
w("")

# --- cold start ---------------------------------------------------------------
sr, sg, sh = (num(f"start.receiver.{s}") for s in ("rust", "go", "hyper"))
tr, tg = num("start.sender.rust"), num("start.sender.go")
lr, lg = num("listen.sender.rust"), num("listen.sender.go")
w("## Cold start")
w("")
w(f"Exec to the first answer, median of {starts} starts alternating Rust and Go; the server "
  "on the server core, the poller (a Python loop of connect and `GET /`) on the other. The "
  "sender's first 200 includes its first token from the metadata emulator and the relay to a "
  "running receiver over plain http.")
w("")
w("| figure (ms) | Rust | Go | bare hyper | Rust / Go |")
w("|---|---|---|---|---|")
w(f"| receiver: exec to first 200 | {fmt(sr, 2)} | {fmt(sg, 2)} | {fmt(sh, 2)} | {ratio(sr, sg)} |")
w(f"| sender: exec to first 200 (token + relay) | {fmt(tr, 2)} | {fmt(tg, 2)} | | {ratio(tr, tg)} |")
w(f"| sender: exec to listening (what a TCP startup probe sees) | {fmt(lr, 2)} | {fmt(lg, 2)} | | "
  f"{ratio(lr, lg)} |")
w("")

# --- size and memory ----------------------------------------------------------
w("## Size and memory")
w("")
w(f"Images: {text('meta.images')}.")
w("")
w("| figure | Rust | Go | Rust / Go |")
w("|---|---|---|---|")
for s in ("receiver", "sender"):
    a, b = num(f"size.{s}.rust"), num(f"size.{s}.go")
    w(f"| binary, {s} (Rust as built; Go stripped) | {mb(a)} | {mb(b)} | {ratio(a, b)} |")
w(f"| binary, metadata-emulator | {mb(num('size.metadata-emulator.rust'))} | | |")
w(f"| binary, bare hyper reference | {mb(num('size.hyper.rust'))} | | |")
for s in ("receiver", "sender", "metadata-emulator"):
    size = num(f"image.{s}.size")
    note = text(f"image.{s}.error", "")
    user = text(f"image.{s}.user", "")
    shown = note or (f"{mb(size)}, user {user or 'root'}" if size is not None else "-")
    w(f"| image, {s} | {shown} | | |")
w(f"| sender image relays to the receiver image via `http://localhost:PORT/` | "
  f"{text('image.relay', 'not checked')} | | |")
for s in ("receiver", "sender"):
    a, b = num(f"{P}.rss_idle.{s}.rust"), num(f"{P}.rss_idle.{s}.go")
    la, lb = num(f"{P}.rss_load.{s}.rust"), num(f"{P}.rss_load.{s}.go")
    w(f"| RSS idle / after load, {s} (one vCPU) | {kb(a)} / {kb(la)} | {kb(b)} / {kb(lb)} | {ratio(a, b)} |")
w("")

# --- targets ------------------------------------------------------------------


def le(a: float | None, b: float | None, slack: float = 1.0) -> bool | None:
    return None if a is None or b is None else a <= b * slack


def ge(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a >= b


images = [num(f"image.{s}.size") for s in ("receiver", "sender", "metadata-emulator")]
images_ok = None if any(i is None for i in images) else all(i <= 10e6 for i in images)  # type: ignore[operator]
w("## Targets (issue 14, one-vCPU shape)")
w("")
w("| target | this run | met? |")
w("|---|---|---|")
w(f"| receiver >= 0.95x the bare hyper reference | {ratio(r, h)} | {verdict(ge(r, None if h is None else 0.95 * h))} |")
w(f"| receiver >= 1.7x the Go seed | {ratio(r, g)} | {verdict(ge(r, None if g is None else 1.7 * g))} |")
w(f"| sender CPU per relayed request <= 3x the receiver's alone | {ratio(sc_r, rc)} | "
  f"{verdict(le(sc_r, None if rc is None else 3 * rc))} |")
w(f"| receiver exec to first 200 <= Go's (10% counts as a tie) | {fmt(sr, 2)} vs {fmt(sg, 2)} ms | "
  f"{verdict(le(sr, sg, 1.1))} |")
w(f"| sender exec to first 200 <= Go's (10% counts as a tie) | {fmt(tr, 2)} vs {fmt(tg, 2)} ms | "
  f"{verdict(le(tr, tg, 1.1))} |")
w(f"| each image <= 10 MB | {' / '.join(mb(i) for i in images)} | {verdict(images_ok)} |")
ra, sa = num(f"{P}.rss_idle.receiver.rust"), num(f"{P}.rss_idle.sender.rust")
w(f"| idle RSS <= 4.6 MB (receiver), 5.8 MB (sender) | {kb(ra)} / {kb(sa)} | "
  f"{verdict(None if ra is None or sa is None else ra / 1024 <= 4.6 and sa / 1024 <= 5.8)} |")
bins = [(num(f"size.{s}.rust"), num(f"size.{s}.go")) for s in ("receiver", "sender")]
w(f"| binaries smaller than Go's | {' / '.join(ratio(a, b) for a, b in bins)} | "
  f"{verdict(None if any(a is None or b is None for a, b in bins) else all(a < b for a, b in bins))} |")  # type: ignore[operator]
w("")

for name in ("CHANGES.md", "NOTES.md"):
    path = bench / name
    if path.exists():
        w(path.read_text().rstrip("\n"))
        w("")
print("\n".join(out).rstrip("\n"))

#!/usr/bin/env bash
# Side-by-side benchmark of this port against the Go tutorial's programs, on
# loopback only, bounded in time (about 4 minutes after the builds). Writes
# bench/RESULTS.md.
#
#   GO_SEED=DIR bench/run.sh     # DURATION=5s ROUNDS=3 by default
#
# Needs: wrk, python3, curl (installed with apt-get if missing), and GO_SEED:
# a folder holding the Go tutorial's two programs and a build.sh that builds
# them (`build.sh OUT` leaves OUT/go-receiver and OUT/go-sender). Nothing of
# theirs is copied here. Image sizes come from `docker image inspect` of
# images built with `docker build -f Dockerfile.SERVICE -t SERVICE .`, where
# docker is present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
seed=${GO_SEED:-}
if [[ -z $seed || ! -x $seed/build.sh ]]; then
  echo "GO_SEED: set it to the folder of the Go tutorial's programs, with their build.sh" >&2
  exit 2
fi
duration=${DURATION:-5s}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
target=${CARGO_TARGET_DIR:-$root/target}
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

log() { printf '==> %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "building the workspace (release)"
(cd "$root" && cargo build --release --locked --workspace -q)
rust_receiver=$target/release/receiver
rust_sender=$target/release/sender
emulator=$target/release/metadata-emulator

log "building the Go seed"
"$seed/build.sh" "$work/go" >/dev/null
go_receiver=$work/go/go-receiver
go_sender=$work/go/go-sender

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME PORT CMD... : runs CMD in the background with its output in
# $work/NAME.log, waits until the port answers, records the pid.
start() {
  local name=$1 port=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  eval "pid_$name=$!"
  local tries=0
  until curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do
    tries=$((tries + 1))
    if ((tries > 500)); then
      log "$name did not start; its log:"
      cat "$work/$name.log" >&2
      exit 1
    fi
    python3 -c 'import time; time.sleep(0.01)'
  done
}

stop() {
  local name=$1 pid
  pid=$(eval "echo \$pid_$name")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# CPU time (user + system) the process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# wrk_run URL CONNECTIONS -> "rps p50_ms p99_ms requests"
wrk_run() {
  wrk -t1 -c"$2" -d"$duration" --latency "$1" | python3 "$here/wrk_parse.py"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mport=$(free_port)
start emulator "$mport" env PORT="$mport" LOG_FORMAT=json RUST_LOG=metadata_emulator=debug,info "$emulator"
metadata_calls() { grep -c '"minted an ID token"' "$work/emulator.log" || true; }

declare -A fig

measure_receiver() { # side binary
  local side=$1 bin=$2 port
  port=$(free_port)
  start "recv_$side" "$port" env PORT="$port" BIND_ADDR=127.0.0.1 LOG_FORMAT=json "$bin"
  local pid
  pid=$(eval "echo \$pid_recv_$side")
  fig[idle_rss_receiver_$side]=$(rss_kb "$pid")
  local c before out
  for c in 64 256; do
    before=$(cpu_ticks "$pid")
    out=$(wrk_run "http://127.0.0.1:$port/" "$c")
    echo "$out" >>"$work/receiver_${side}_c$c"
    # microseconds of the server's CPU per request
    awk -v t="$(( $(cpu_ticks "$pid") - before ))" -v hz="$ticks_per_second" \
      '{printf "%.1f\n", t * 1e6 / hz / $4}' <<<"$out" >>"$work/receiver_cpu_${side}_c$c"
  done
  fig[load_rss_receiver_$side]=$(rss_kb "$pid")
  stop "recv_$side"
}

measure_chain() { # side sender-binary receiver-binary
  local side=$1 sbin=$2 rbin=$3 rport sport
  rport=$(free_port)
  sport=$(free_port)
  start "chainr_$side" "$rport" env PORT="$rport" BIND_ADDR=127.0.0.1 LOG_FORMAT=json "$rbin"
  local before after
  before=$(metadata_calls)
  start "chains_$side" "$sport" env -u GOOGLE_APPLICATION_CREDENTIALS PORT="$sport" BIND_ADDR=127.0.0.1 \
    LOG_FORMAT=json GCE_METADATA_HOST="127.0.0.1:$mport" RECEIVING_SERVICE_URL="http://127.0.0.1:$rport" \
    HOME="$work" "$sbin"
  local pid
  pid=$(eval "echo \$pid_chains_$side")
  fig[idle_rss_sender_$side]=$(rss_kb "$pid")
  local out
  out=$(wrk_run "http://127.0.0.1:$sport/" 64)
  after=$(metadata_calls)
  echo "$out" >>"$work/chain_$side"
  # requests include the readiness probe's one
  echo "$(( after - before )) $(awk '{print $4}' <<<"$out")" >>"$work/calls_$side"
  fig[load_rss_sender_$side]=$(rss_kb "$pid")
  stop "chains_$side"
  stop "chainr_$side"
}

for round in $(seq "$rounds"); do
  log "round $round of $rounds: receiver, rust then go"
  measure_receiver rust "$rust_receiver"
  measure_receiver go "$go_receiver"
  log "round $round of $rounds: chain, go then rust"
  measure_chain go "$go_sender" "$go_receiver"
  measure_chain rust "$rust_sender" "$rust_receiver"
done

log "exec to first 200 (median of 9 starts each)"
startup() { # binary [extra env...]
  local bin=$1 port
  shift
  for _ in $(seq 9); do
    port=$(free_port)
    env -u GOOGLE_APPLICATION_CREDENTIALS PORT="$port" BIND_ADDR=127.0.0.1 "$@" \
      python3 "$here/first200.py" "$port" -- "$bin"
  done | median
}
fig[start_receiver_rust]=$(startup "$rust_receiver")
fig[start_receiver_go]=$(startup "$go_receiver")
rport=$(free_port)
start startup_receiver "$rport" env PORT="$rport" BIND_ADDR=127.0.0.1 "$rust_receiver"
sender_env=(HOME="$work" GCE_METADATA_HOST="127.0.0.1:$mport"
  RECEIVING_SERVICE_URL="http://127.0.0.1:$rport")
fig[start_sender_rust]=$(startup "$rust_sender" "${sender_env[@]}")
fig[start_sender_go]=$(startup "$go_sender" "${sender_env[@]}")
stop startup_receiver

# col FILE N: median of column N
col() { awk -v n="$2" '{print $n}' "$1" | median; }

for side in rust go; do
  for c in 64 256; do
    f=$work/receiver_${side}_c$c
    fig[recv_rps_c${c}_$side]=$(col "$f" 1)
    fig[recv_p50_c${c}_$side]=$(col "$f" 2)
    fig[recv_p99_c${c}_$side]=$(col "$f" 3)
    fig[recv_cpu_c${c}_$side]=$(median <"$work/receiver_cpu_${side}_c$c")
  done
  fig[chain_rps_$side]=$(col "$work/chain_$side" 1)
  fig[chain_p50_$side]=$(col "$work/chain_$side" 2)
  fig[chain_p99_$side]=$(col "$work/chain_$side" 3)
  fig[calls_per_5000_$side]=$(awk '{c+=$1; r+=$2} END {printf "%.0f", c*5000/r}' "$work/calls_$side")
  fig[calls_raw_$side]=$(awk '{c+=$1; r+=$2} END {printf "%d calls for %d requests", c, r}' "$work/calls_$side")
done

size_of() { # stripped size in bytes, of a copy
  cp "$1" "$work/size.bin"
  strip "$work/size.bin" 2>/dev/null || true
  stat -c %s "$work/size.bin"
}
fig[size_receiver_rust]=$(size_of "$rust_receiver")
fig[size_receiver_go]=$(size_of "$go_receiver")
fig[size_sender_rust]=$(size_of "$rust_sender")
fig[size_sender_go]=$(size_of "$go_sender")

image_size() {
  command -v docker >/dev/null || return 0
  docker image inspect --format '{{.Size}}' "$1" 2>/dev/null || true
}
fig[image_receiver]=$(image_size receiver)
fig[image_sender]=$(image_size sender)
images_note="\`docker build\` images"
command -v docker >/dev/null || images_note="no docker on this machine: not measured"


ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}x' if b else '-')" "$1" "$2"; }
mb() { python3 -c "import sys; print(f'{int(sys.argv[1])/1e6:.1f} MB' if sys.argv[1] else '-')" "${1:-}"; }
kb_mb() { python3 -c "import sys; print(f'{int(sys.argv[1])/1024:.1f} MB')" "$1"; }

commit=$(cd "$root" && git rev-parse --short HEAD)
{
  echo "# Benchmark results"
  echo
  echo "Written by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$commit\`."
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)."
  echo "Loopback only; each figure is the median of $rounds rounds of \`wrk -t1 -d$duration --latency\`, Rust and Go alternating."
  echo "Go: the tutorial's programs from \`go-seed/\`, built by its \`build.sh\` ($(go version 2>/dev/null | awk '{print $3}'))."
  echo "Both senders get tokens from \`metadata-emulator\` (RS256, 2048-bit key) through \`GCE_METADATA_HOST\`."
  echo
  echo "| figure | Rust | Go | Rust / Go |"
  echo "|---|---|---|---|"
  for c in 64 256; do
    echo "| receiver rps, \`wrk -t1 -c$c\` | ${fig[recv_rps_c${c}_rust]} | ${fig[recv_rps_c${c}_go]} | $(ratio "${fig[recv_rps_c${c}_rust]}" "${fig[recv_rps_c${c}_go]}") |"
    echo "| receiver CPU per request (µs, server process), -c$c | ${fig[recv_cpu_c${c}_rust]} | ${fig[recv_cpu_c${c}_go]} | $(ratio "${fig[recv_cpu_c${c}_rust]}" "${fig[recv_cpu_c${c}_go]}") |"
    echo "| receiver p50 / p99 latency (ms), -c$c | ${fig[recv_p50_c${c}_rust]} / ${fig[recv_p99_c${c}_rust]} | ${fig[recv_p50_c${c}_go]} / ${fig[recv_p99_c${c}_go]} | |"
  done
  echo "| chain rps (sender -> receiver), -c64 | ${fig[chain_rps_rust]} | ${fig[chain_rps_go]} | $(ratio "${fig[chain_rps_rust]}" "${fig[chain_rps_go]}") |"
  echo "| chain p50 / p99 latency (ms), -c64 | ${fig[chain_p50_rust]} / ${fig[chain_p99_rust]} | ${fig[chain_p50_go]} / ${fig[chain_p99_go]} | |"
  echo "| metadata calls per 5 000 sender requests | ${fig[calls_per_5000_rust]} (${fig[calls_raw_rust]}) | ${fig[calls_per_5000_go]} (${fig[calls_raw_go]}) | |"
  echo "| receiver RSS idle / after load | $(kb_mb "${fig[idle_rss_receiver_rust]}") / $(kb_mb "${fig[load_rss_receiver_rust]}") | $(kb_mb "${fig[idle_rss_receiver_go]}") / $(kb_mb "${fig[load_rss_receiver_go]}") | |"
  echo "| sender RSS idle / after load | $(kb_mb "${fig[idle_rss_sender_rust]}") / $(kb_mb "${fig[load_rss_sender_rust]}") | $(kb_mb "${fig[idle_rss_sender_go]}") / $(kb_mb "${fig[load_rss_sender_go]}") | |"
  echo "| stripped binary, receiver | $(mb "${fig[size_receiver_rust]}") | $(mb "${fig[size_receiver_go]}") | $(ratio "${fig[size_receiver_rust]}" "${fig[size_receiver_go]}") |"
  echo "| stripped binary, sender | $(mb "${fig[size_sender_rust]}") | $(mb "${fig[size_sender_go]}") | $(ratio "${fig[size_sender_rust]}" "${fig[size_sender_go]}") |"
  echo "| container image ($images_note), receiver / sender | $(mb "${fig[image_receiver]}") / $(mb "${fig[image_sender]}") | | |"
  echo "| exec to first 200, receiver (ms, median of 9) | ${fig[start_receiver_rust]} | ${fig[start_receiver_go]} | |"
  echo "| exec to first 200, sender, first request fetches a token (ms, median of 9) | ${fig[start_sender_rust]} | ${fig[start_sender_go]} | |"
  echo
  cat "$here/NOTES.md"
} >"$here/RESULTS.md.new"
mv "$here/RESULTS.md.new" "$here/RESULTS.md"
cat "$here/RESULTS.md"

#!/usr/bin/env bash
# Benchmark of this port against the Go tutorial's programs and a bare hyper
# server, measured the way Cloud Run bills: one vCPU, CPU per request, cost per
# million requests, cold start, image size and idle memory. Loopback only;
# Rust and Go alternate within each round; figures are medians. Writes
# bench/RESULTS.md.
#
#   GO_SEED=DIR bench/run.sh
#
# Settings (environment):
#   GO_SEED       required: the Go tutorial's programs and a build.sh that
#                 builds them (`build.sh OUT` leaves OUT/go-receiver and
#                 OUT/go-sender). Nothing of theirs is copied here.
#   DURATION=5s   each wrk run          ROUNDS=5   rounds of every wrk run
#   STARTS=9      cold starts per binary (alternating Rust and Go)
#   STATIC=1      bench the static binaries the images ship (crt-static on
#                 the gnu target, as the Dockerfiles build them); 0: the
#                 ordinary dynamic release build
#   IMAGES=auto   auto: build the three images with `docker build` when a
#                 docker engine answers; skip: only inspect images already
#                 built under IMAGE_PREFIX; off: no docker at all
#   IMAGE_PREFIX=bench/  image names: ${IMAGE_PREFIX}receiver and so on
#   SERVER_CPU=1 LOAD_CPU=0   the one-vCPU shape's cores
#
# At the defaults a run takes about 7 minutes after the builds (5 rounds of
# 13 wrk runs of 5 s: 5 pinned, 8 shared; then 63 cold starts); the image
# builds add their own time.
#
# The one-vCPU shape pins every server under test (tokio and Go both size
# their thread pools from the affinity mask) to SERVER_CPU, and wrk and the
# metadata emulator to LOAD_CPU. The shared shape pins nothing. CPU per
# request is each server's utime+stime (from /proc/PID/stat) over the wrk
# run, divided by the requests wrk completed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
seed=${GO_SEED:-}
if [[ -z $seed || ! -x $seed/build.sh ]]; then
  echo "GO_SEED: set it to the folder of the Go tutorial's programs, with their build.sh" >&2
  exit 2
fi
duration=${DURATION:-5s}
rounds=${ROUNDS:-5}
starts=${STARTS:-9}
static=${STATIC:-1}
images=${IMAGES:-auto}
prefix=${IMAGE_PREFIX:-bench/}
server_cpu=${SERVER_CPU:-1}
load_cpu=${LOAD_CPU:-0}
case $images in auto | skip | off) ;; *)
  echo "IMAGES: auto, skip or off, not '$images'" >&2
  exit 2
  ;;
esac
if (($(nproc) < 2)); then
  echo "needs at least 2 CPUs: one for the server under test, one for the load" >&2
  exit 2
fi
work=$(mktemp -d)
target=${CARGO_TARGET_DIR:-$root/target}
data=$work/data
pids=()
containers=()
began=$SECONDS

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if ((${#containers[@]})); then
    docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

log() { printf '==> %s\n' "$*" >&2; }
# put KEY VALUE: one measurement; report.py takes the median per key.
put() { printf '%s %s\n' "$1" "$2" >>"$data"; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $static == 1 ]]; then
  triple="$(uname -m)-unknown-linux-gnu"
  log "building the workspace (release, static glibc, as the images do)"
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -q --target "$triple" -p receiver -p sender -p metadata-emulator)
  bin_dir=$target/$triple/release
  put meta.build "static (\`-C target-feature=+crt-static\`, $triple), as the images ship"
else
  log "building the workspace (release)"
  (cd "$root" && cargo build --release --locked -q -p receiver -p sender -p metadata-emulator)
  bin_dir=$target/release
  put meta.build "dynamic (the plain release build; the images ship the static one)"
fi
rust_receiver=$bin_dir/receiver
rust_sender=$bin_dir/sender
emulator=$bin_dir/metadata-emulator

log "building the bare hyper reference (bench/hello-hyper)"
CARGO_TARGET_DIR=$target/hello-hyper cargo build --release --locked -q \
  --manifest-path "$here/hello-hyper/Cargo.toml"
hyper_ref=$target/hello-hyper/release/hello-hyper

log "building the Go seed"
"$seed/build.sh" "$work/go" >/dev/null
go_receiver=$work/go/go-receiver
go_sender=$work/go/go-sender

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# on CPUS CMD...: CMD pinned to CPUS, or unpinned when CPUS is empty.
on() {
  local cpus=$1
  shift
  if [[ -n $cpus ]]; then
    taskset -c "$cpus" "$@"
  else
    "$@"
  fi
}

# start NAME PORT CPUS CMD... : runs CMD in the background (pinned to CPUS
# unless empty) with its output in $work/NAME.log, waits until the port
# answers GET /, records the server's pid as pid_NAME.
start() {
  local name=$1 port=$2 cpus=$3
  shift 3
  local cmd=("$@")
  [[ -z $cpus ]] || cmd=(taskset -c "$cpus" "${cmd[@]}")
  # a command, not a function, so $! is the server (taskset and env exec)
  "${cmd[@]}" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
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

pid_of() { local v="pid_$1"; printf '%s' "${!v}"; }

stop() {
  local pid
  pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# CPU time (user + system) the process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# load URL CONNECTIONS CPUS -> "rps p50_ms p99_ms requests"
load() {
  on "$3" wrk -t1 -c"$2" -d"$duration" --latency "$1" | python3 "$here/wrk_parse.py"
}

# measure KEY URL CONNECTIONS CPUS PID... : one wrk run; records rps,
# latency, and each PID's CPU microseconds per request as KEY.cpu_N.
measure() {
  local key=$1 url=$2 conns=$3 cpus=$4
  shift 4
  local before=() pid out i=0 rps p50 p99 requests
  for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
  out=$(load "$url" "$conns" "$cpus")
  read -r rps p50 p99 requests <<<"$out"
  put "$key.rps" "$rps"
  put "$key.p50" "$p50"
  put "$key.p99" "$p99"
  for pid in "$@"; do
    put "$key.cpu_$i" "$(awk -v t="$(($(cpu_ticks "$pid") - before[i]))" -v hz="$hz" -v n="$requests" \
      'BEGIN {printf "%.2f", t * 1e6 / hz / n}')"
    i=$((i + 1))
  done
  printf '%s' "$requests"
}

docker_up=0
if [[ $images != off ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker_up=1
fi
if ((docker_up)); then
  if [[ $images == auto ]]; then
    for s in receiver sender metadata-emulator; do
      log "docker build -f Dockerfile.$s -t ${prefix}$s"
      if ! DOCKER_BUILDKIT=1 docker build -q -f "$root/Dockerfile.$s" -t "${prefix}$s" "$root" >"$work/build-$s.log" 2>&1; then
        log "the $s image did not build (the bench goes on without it); the end of its log:"
        tail -n 20 "$work/build-$s.log" >&2
        put "image.$s.error" "did not build"
      fi
    done
  fi
  for s in receiver sender metadata-emulator; do
    if docker image inspect "${prefix}$s" >/dev/null 2>&1; then
      put "image.$s.size" "$(docker image inspect --format '{{.Size}}' "${prefix}$s")"
      put "image.$s.user" "$(docker image inspect --format '{{.Config.User}}' "${prefix}$s")"
    fi
  done
  if docker image inspect "${prefix}receiver" "${prefix}sender" "${prefix}metadata-emulator" >/dev/null 2>&1; then
    log "containers: the sender image relays to the receiver image through http://localhost:PORT/"
    # host network: loopback is shared, so "localhost" is resolved inside the
    # sender's image (/etc/hosts, static glibc) and reaches the receiver.
    cm=$(free_port)
    cr=$(free_port)
    cs=$(free_port)
    containers+=("$(docker run -d --network=host -e PORT="$cm" "${prefix}metadata-emulator")")
    containers+=("$(docker run -d --network=host -e PORT="$cr" "${prefix}receiver")")
    containers+=("$(docker run -d --network=host -e PORT="$cs" -e GCE_METADATA_HOST="localhost:$cm" \
      -e RECEIVING_SERVICE_URL="http://localhost:$cr/" "${prefix}sender")")
    answer=""
    for _ in $(seq 200); do
      answer=$(curl -s "http://127.0.0.1:$cs/" 2>/dev/null || true)
      [[ -n $answer ]] && break
      python3 -c 'import time; time.sleep(0.05)'
    done
    put image.relay "$(printf '%s' "${answer:-no answer}" | tr -d '\r\n')"
    docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
    containers=()
  fi
  if [[ $images == auto ]]; then
    put meta.images "built here with \`docker build -f Dockerfile.SERVICE\`; sizes from \`docker image inspect\`"
  else
    put meta.images "built beforehand as ${prefix}SERVICE (IMAGES=skip); sizes from \`docker image inspect\`"
  fi
else
  put meta.images "not measured: no docker engine answered on this machine (IMAGES=$images)"
fi

measuring_since=$SECONDS
mport=$(free_port)
start emulator "$mport" "$load_cpu" env PORT="$mport" LOG_FORMAT=json \
  RUST_LOG=metadata_emulator=debug,info "$emulator"
metadata_calls() { grep -c '"minted an ID token"' "$work/emulator.log" || true; }

# receiver SHAPE SIDE BINARY SERVER_CPUS LOAD_CPUS CONNECTIONS...
receiver() {
  local shape=$1 side=$2 bin=$3 scpu=$4 lcpu=$5 port pid c
  shift 5
  port=$(free_port)
  start "recv_$side" "$port" "$scpu" env PORT="$port" BIND_ADDR=127.0.0.1 LOG_FORMAT=json "$bin"
  pid=$(pid_of "recv_$side")
  put "$shape.rss_idle.receiver.$side" "$(rss_kb "$pid")"
  for c in "$@"; do
    measure "$shape.recv.$side.c$c" "http://127.0.0.1:$port/" "$c" "$lcpu" "$pid" >/dev/null
  done
  put "$shape.rss_load.receiver.$side" "$(rss_kb "$pid")"
  stop "recv_$side"
}

# chain SHAPE SIDE SENDER RECEIVER SERVER_CPUS LOAD_CPUS
chain() {
  local shape=$1 side=$2 sbin=$3 rbin=$4 scpu=$5 lcpu=$6 rport sport before requests
  rport=$(free_port)
  sport=$(free_port)
  start "chainr_$side" "$rport" "$scpu" env PORT="$rport" BIND_ADDR=127.0.0.1 LOG_FORMAT=json "$rbin"
  before=$(metadata_calls)
  start "chains_$side" "$sport" "$scpu" env -u GOOGLE_APPLICATION_CREDENTIALS PORT="$sport" \
    BIND_ADDR=127.0.0.1 LOG_FORMAT=json GCE_METADATA_HOST="127.0.0.1:$mport" \
    RECEIVING_SERVICE_URL="http://127.0.0.1:$rport" HOME="$work" "$sbin"
  put "$shape.rss_idle.sender.$side" "$(rss_kb "$(pid_of "chains_$side")")"
  # cpu_0: the sender, cpu_1: the receiver
  requests=$(measure "$shape.chain.$side" "http://127.0.0.1:$sport/" 64 "$lcpu" \
    "$(pid_of "chains_$side")" "$(pid_of "chainr_$side")")
  # the readiness probe's request fetched the first token too
  put "$shape.calls.$side" "$(($(metadata_calls) - before))"
  put "$shape.requests.$side" "$((requests + 1))"
  put "$shape.rss_load.sender.$side" "$(rss_kb "$(pid_of "chains_$side")")"
  stop "chains_$side"
  stop "chainr_$side"
}

for round in $(seq "$rounds"); do
  log "round $round of $rounds, one-vCPU shape (servers on CPU $server_cpu, load on CPU $load_cpu)"
  if ((round % 2)); then order=(rust go hyper); else order=(go hyper rust); fi
  for side in "${order[@]}"; do
    case $side in
      rust) bin=$rust_receiver ;;
      go) bin=$go_receiver ;;
      hyper) bin=$hyper_ref ;;
    esac
    receiver pinned "$side" "$bin" "$server_cpu" "$load_cpu" 64
  done
  if ((round % 2)); then order=(go rust); else order=(rust go); fi
  for side in "${order[@]}"; do
    if [[ $side == rust ]]; then
      chain pinned rust "$rust_sender" "$rust_receiver" "$server_cpu" "$load_cpu"
    else
      chain pinned go "$go_sender" "$go_receiver" "$server_cpu" "$load_cpu"
    fi
  done
  log "round $round of $rounds, shared shape (nothing pinned)"
  if ((round % 2)); then order=(rust go hyper); else order=(go hyper rust); fi
  for side in "${order[@]}"; do
    case $side in
      rust) bin=$rust_receiver ;;
      go) bin=$go_receiver ;;
      hyper) bin=$hyper_ref ;;
    esac
    receiver shared "$side" "$bin" "" "" 64 256
  done
  if ((round % 2)); then order=(go rust); else order=(rust go); fi
  for side in "${order[@]}"; do
    if [[ $side == rust ]]; then
      chain shared rust "$rust_sender" "$rust_receiver" "" ""
    else
      chain shared go "$go_sender" "$go_receiver" "" ""
    fi
  done
done

log "cold starts: exec to first 200, $starts each, alternating"
# first KEY [--listening] BINARY [ENV...]: one start of BINARY on
# SERVER_CPU, polled from LOAD_CPU.
first() {
  local key=$1 flag=() bin port
  shift
  if [[ $1 == --listening ]]; then
    flag=(--listening)
    shift
  fi
  bin=$1
  shift
  port=$(free_port)
  put "$key" "$(env -u GOOGLE_APPLICATION_CREDENTIALS PORT="$port" BIND_ADDR=127.0.0.1 "$@" \
    taskset -c "$load_cpu" python3 "$here/first200.py" "${flag[@]}" --cpu "$server_cpu" "$port" -- "$bin")"
}
rport=$(free_port)
start startup_receiver "$rport" "$load_cpu" env PORT="$rport" BIND_ADDR=127.0.0.1 "$rust_receiver"
sender_env=(HOME="$work" GCE_METADATA_HOST="127.0.0.1:$mport" RECEIVING_SERVICE_URL="http://127.0.0.1:$rport")
for i in $(seq "$starts"); do
  if ((i % 2)); then order=(rust go); else order=(go rust); fi
  for side in "${order[@]}"; do
    if [[ $side == rust ]]; then r=$rust_receiver s=$rust_sender; else r=$go_receiver s=$go_sender; fi
    first "start.receiver.$side" "$r"
    first "start.sender.$side" "$s" "${sender_env[@]}"
    first "listen.sender.$side" --listening "$s" "${sender_env[@]}"
  done
  first start.receiver.hyper "$hyper_ref"
done
stop startup_receiver

log "sizes"
for s in receiver sender metadata-emulator; do
  put "size.$s.rust" "$(stat -c %s "$bin_dir/$s")"
done
for s in receiver sender; do
  cp "$work/go/go-$s" "$work/size.bin"
  strip "$work/size.bin" 2>/dev/null || true
  put "size.$s.go" "$(stat -c %s "$work/size.bin")"
done
put size.hyper.rust "$(stat -c %s "$hyper_ref")"

put meta.commit "$(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD -- . ':!bench' || echo ' (with uncommitted changes)')"
put meta.date "$(date -u '+%Y-%m-%d %H:%M UTC')"
put meta.machine "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
put meta.go "$(go version 2>/dev/null | awk '{print $3}')"
put meta.settings "DURATION=$duration ROUNDS=$rounds STARTS=$starts SERVER_CPU=$server_cpu LOAD_CPU=$load_cpu"
put meta.duration "$duration"
put meta.seconds "$((SECONDS - measuring_since))"
put meta.total_seconds "$((SECONDS - began))"

mkdir -p "$target"
cp "$data" "$target/bench-raw.txt"
python3 "$here/report.py" "$data" "$here" >"$here/RESULTS.md.new"
mv "$here/RESULTS.md.new" "$here/RESULTS.md"
cat "$here/RESULTS.md"
log "done in $((SECONDS - began)) s ($((SECONDS - measuring_since)) s measuring); raw figures in $target/bench-raw.txt"

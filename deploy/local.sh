#!/usr/bin/env bash
# The whole tutorial on this machine, offline: the metadata emulator mints
# real ID tokens as calling-service-sa, the receiver verifies them in the app
# against the emulator's keys, the sender relays.
#
#   deploy/local.sh           build, walk the tutorial's four stages, then
#                             leave the last one running and print what to
#                             curl; Ctrl-C stops everything
#   deploy/local.sh --check   build, walk the four stages, exit 0 only if
#                             every stage got the status and body it should
#
# Every process listens on 127.0.0.1, on a port the kernel picks (PORT=0);
# readiness is read from each one's `listening` log line. As on Cloud Run, a
# redeployed service keeps its URL: it comes back on the same port. Whatever
# this script starts, it stops (SIGTERM, then SIGKILL after 10 s), on
# success, failure or Ctrl-C.
#
# Builds with `cargo build --release --locked` into $CARGO_TARGET_DIR
# (default: the repository's target/). Needs cargo and curl.
set -euo pipefail

readonly HELLO='Hello from the receiving service!'
readonly PREFIX='Response from receiving service: '
# The emulator's identity: the tutorial's dedicated calling account.
readonly CALLER='calling-service-sa@local-project.iam.gserviceaccount.com'
# Who holds the invoker role before the tutorial's grant: someone else.
readonly OTHER='other-service-sa@local-project.iam.gserviceaccount.com'
readonly START_TIMEOUT=30 STOP_TIMEOUT=10

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

mode=run
case ${1-} in
  '') ;;
  --check) mode=check ;;
  -h | --help) usage; exit 0 ;;
  *) echo "local.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac
if (($# > 1)); then echo "local.sh: one argument at most" >&2; exit 2; fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target="$PWD/$target"
export CARGO_TARGET_DIR="$target"
bin="$target/release"

for tool in cargo curl; do
  command -v "$tool" >/dev/null || { echo "local.sh: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/local-tutorial.XXXXXX")
# PIDs of the processes started and not yet stopped.
pids=()

# alive PID: true while the process runs (a zombie, exited but not yet
# reaped, does not count). /proc where there is one (slim images have no
# ps), ps elsewhere (macOS).
alive() {
  local stat
  if [[ -d /proc/self ]]; then
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
  else
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  fi
  [[ -n $stat && $stat != Z* ]]
}

# stop PID...: SIGTERM, up to STOP_TIMEOUT seconds to drain, then SIGKILL;
# reaps each one and forgets it.
stop() {
  local pid deadline
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if alive "$pid"; then
      echo "local.sh: pid $pid did not stop in ${STOP_TIMEOUT} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  forget "$@"
}

# forget PID...: drops reaped processes from $pids, so their numbers, free
# for reuse, are never signalled.
forget() {
  local pid kept keep=()
  for kept in ${pids[@]+"${pids[@]}"}; do
    for pid in "$@"; do [[ $kept == "$pid" ]] && continue 2; done
    keep+=("$kept")
  done
  pids=(${keep[@]+"${keep[@]}"})
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then stop "${pids[@]}"; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME PROGRAM [VAR=VALUE...] [-- ARG...]: runs PROGRAM on 127.0.0.1
# (PORT=0 unless given) with JSON logs in $work/NAME.log and no variables
# but these, and waits for its `listening` line. Sets $pid and $addr.
start() {
  local name=$1 program=$2 log="$work/$1.log" line deadline vars=()
  shift 2
  while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
  if (($#)); then shift; fi
  : >"$log"
  env -i PATH="$PATH" ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} \
    BIND_ADDR=127.0.0.1 PORT=0 LOG_FORMAT=json SHUTDOWN_GRACE=2s ${vars[@]+"${vars[@]}"} \
    "$bin/$program" "$@" >>"$log" 2>&1 </dev/null &
  pid=$!
  pids+=("$pid")
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    line=$(grep -m1 '"message":"listening"' "$log" || true)
    if [[ -n $line ]]; then
      addr=$(sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' <<<"$line")
      if [[ -n $addr ]]; then return 0; fi
    fi
    if ! alive "$pid"; then
      echo "local.sh: $name exited before listening:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "local.sh: $name not listening after ${START_TIMEOUT} s:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.05
  done
}

# identity_token AUDIENCE: an ID token from the emulator, as the sender gets it.
identity_token() {
  curl -fsS --noproxy '*' --max-time 5 -G -H 'Metadata-Flavor: Google' \
    --data-urlencode "audience=$1" --data-urlencode format=full \
    "$emulator_url/computeMetadata/v1/instance/service-accounts/default/identity"
}

# wait_for_keys: polls the receiver with a token for its URL until it has
# fetched the emulator's keys (it answers 503 until then).
wait_for_keys() {
  local token status deadline=$((SECONDS + START_TIMEOUT))
  token=$(identity_token "$receiver_url")
  while :; do
    status=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' \
      -H "Authorization: Bearer $token" "$receiver_url/" 2>/dev/null || true)
    if [[ -n $status && $status != 503 && $status != 000 ]]; then return 0; fi
    if ((SECONDS >= deadline)); then
      echo "local.sh: the receiver has no signing keys after ${START_TIMEOUT} s:" >&2
      tail -n 20 "$work/receiver.log" >&2
      return 1
    fi
    sleep 0.05
  done
}

# The services as the tutorial deploys them. A redeploy stops the old
# process and starts the new one on the same port, so URLs stay put.
deploy_receiver() { # [VAR=VALUE...]
  if [[ -n ${receiver_pid-} ]]; then stop "$receiver_pid"; fi
  start receiver receiver PORT="${receiver_port:-0}" "$@"
  receiver_pid=$pid receiver_port=${addr##*:} receiver_url="http://$addr"
}
deploy_private_receiver() { # ALLOWED_INVOKERS
  deploy_receiver AUTH_AUDIENCE="$receiver_url" \
    AUTH_JWKS_URL="$emulator_url/oauth2/v3/certs" AUTH_ALLOWED_INVOKERS="$1"
  wait_for_keys
}
deploy_sender() { # [VAR=VALUE...]
  if [[ -n ${sender_pid-} ]]; then stop "$sender_pid"; fi
  start sender sender PORT="${sender_port:-0}" RECEIVING_SERVICE_URL="$receiver_url/" "$@"
  sender_pid=$pid sender_port=${addr##*:} sender_url="http://$addr"
}

failures=0
# stage N DESCRIPTION STATUS BODY: curls the sender and prints one line with
# what it got. BODY is the exact body expected, or `refusal`: the receiver's
# refusal relayed (the sender's prefix, no hello).
stage() {
  local n=$1 what=$2 want_status=$3 want_body=$4 status body shown ok=1 log
  status=$(curl -sS --noproxy '*' --max-time 15 -o "$work/body" -w '%{http_code}' \
    "$sender_url/" 2>"$work/curl.err") || status=000
  body=$(cat "$work/body" 2>/dev/null || true)
  [[ $status == "$want_status" ]] || ok=0
  if [[ $want_body == refusal ]]; then
    [[ $body == "$PREFIX"* && $body != *"$HELLO"* ]] || ok=0
  else
    [[ $body == "$want_body" ]] || ok=0
  fi
  shown=$(head -n 1 <<<"$body")
  if ((${#shown} > 90)); then shown="${shown:0:87}..."; fi
  printf '  stage %s  %-44s %s  %s\n' "$n" "$what" "$status" "$shown"
  if ((ok)); then return 0; fi
  failures=$((failures + 1))
  if [[ $want_body == refusal ]]; then
    printf '           FAILED: expected %s with the refusal relayed\n' "$want_status"
  else
    printf '           FAILED: expected %s "%s"\n' "$want_status" "$want_body"
  fi
  if [[ -s $work/curl.err ]]; then sed 's/^/           curl: /' "$work/curl.err"; fi
  for log in receiver sender; do
    echo "           the $log's last log lines:"
    tail -n 5 "$work/$log.log" | sed 's/^/             /'
  done
}

echo "==> cargo build --release --locked (target dir: $target)" >&2
(cd "$root" && cargo build --release --locked) >&2

echo "==> the tutorial, offline"
start emulator metadata-emulator -- --email "$CALLER"
emulator_pid=$pid emulator_url="http://$addr"

# Tutorial: deploy both services, public.
deploy_receiver
deploy_sender ID_TOKEN_SOURCE=none
stage 1 "receiver open, sender sends no token" 200 "$PREFIX$HELLO"

# Tutorial: redeploy the receiver with --no-allow-unauthenticated. Here it
# verifies ID tokens itself, and only OTHER may invoke it.
deploy_private_receiver "$OTHER"
stage 2 "receiver verifies tokens, sender sends none" 401 refusal

# Tutorial: the sender fetches ID tokens, redeployed as calling-service-sa.
deploy_sender ID_TOKEN_SOURCE=metadata GCE_METADATA_HOST="${emulator_url#http://}"
stage 3 "sender's identity not on the allowlist" 403 refusal

# Tutorial: grant calling-service-sa roles/run.invoker on the receiver.
deploy_private_receiver "$OTHER,$CALLER"
stage 4 "identity added to the allowlist" 200 "$PREFIX$HELLO"

if [[ $mode == check ]]; then
  if ((failures)); then
    echo "==> $failures of 4 stages failed" >&2
    exit 1
  fi
  echo "==> all 4 stages hold"
  exit 0
fi

if ((failures)); then
  echo "==> $failures of 4 stages failed (see above); the last stage runs anyway" >&2
fi
token_url="$emulator_url/computeMetadata/v1/instance/service-accounts/default/identity"
cat <<EOF

The last stage is running; Ctrl-C stops everything.
  metadata emulator  $emulator_url  mints ID tokens for $CALLER
  receiver           $receiver_url  verifies ID tokens; allows $OTHER and $CALLER
  sender             $sender_url  relays to the receiver with a token from the emulator

Try:
  curl $sender_url/
  curl -i $receiver_url/
  TOKEN=\$(curl -s -H 'Metadata-Flavor: Google' '$token_url?audience=$receiver_url&format=full')
  curl -H "Authorization: Bearer \$TOKEN" $receiver_url/
  curl $emulator_url/oauth2/v3/certs

Logs, one JSON object per line (removed on exit): $work/
EOF
trap 'echo; echo "==> stopping"; exit 0' INT TERM
# Returns at once on Ctrl-C, or when a service exits on its own.
while alive "$emulator_pid" && alive "$receiver_pid" && alive "$sender_pid"; do
  sleep 1 &
  pids+=("$!")
  wait "$!" || true
  forget "$!"
done
echo "==> a service exited unexpectedly; stopping the others" >&2
exit 1

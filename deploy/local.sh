#!/usr/bin/env bash
# The whole tutorial on this machine, offline. The receiver runs as the
# tutorial deploys it, checking nothing itself, behind cloud-run-ingress,
# which plays Cloud Run's front end: it checks each caller's ID token against
# the service's IAM policy (a JSON file, edited in place as
# `gcloud run services add-iam-policy-binding` edits the real one) before
# the request reaches the container. The sender runs behind another one,
# public. Two metadata emulators sharing one signing key play the metadata
# server the sender asks for tokens: one as the project's default compute
# service account (Editor on the project), one as calling-service-sa;
# "redeploying the sender as another account" points it at the other one.
#
#   deploy/local.sh                   build, walk the tutorial's five stages,
#                                     then leave the last one running and print
#                                     what to curl; Ctrl-C stops everything
#   deploy/local.sh --check           build, walk the five stages, exit 0 only
#                                     if every stage got the status and body it
#                                     should
#   deploy/local.sh --in-app [--check]
#                                     the other way to protect the receiver: no
#                                     front end, the receiver verifies ID tokens
#                                     itself (AUTH_* settings) against an
#                                     allowlist; four stages, and a missing
#                                     token gets the receiver's 401 where Cloud
#                                     Run's front end answers 403
#
# Every process listens on 127.0.0.1, on a port the kernel picks (PORT=0);
# readiness is read from each one's `listening` log line. As on Cloud Run, a
# redeployed service keeps its URL: it comes back on the same port. Whatever
# this script starts, it stops (SIGTERM, then SIGKILL after 10 s), on
# success, failure or Ctrl-C.
#
# Builds with `cargo build --release --locked` into $CARGO_TARGET_DIR
# (default: the repository's target/). Needs cargo and curl, and openssl
# (the shared signing key) unless --in-app.
set -euo pipefail

readonly HELLO='Hello from the receiving service!'
readonly PREFIX='Response from receiving service: '
readonly PROJECT_NUMBER=123456789012
# The account a Cloud Run service runs as unless deployed with
# --service-account; the emulator calls it `default-compute`.
readonly COMPUTE_SA="$PROJECT_NUMBER-compute@developer.gserviceaccount.com"
# The tutorial's dedicated calling account.
readonly CALLER='calling-service-sa@local-project.iam.gserviceaccount.com'
# Who holds the invoker role before the tutorial's grant (--in-app): someone else.
readonly OTHER='other-service-sa@local-project.iam.gserviceaccount.com'
# Policy reloads take effect within 2 s; the rest is slack for a busy machine.
readonly START_TIMEOUT=30 STOP_TIMEOUT=10 RELOAD_TIMEOUT=10

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

mode=run walk=front-end
for arg in "$@"; do
  case $arg in
    --check) mode=check ;;
    --in-app) walk=in-app ;;
    -h | --help) usage; exit 0 ;;
    *) echo "local.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target="$PWD/$target"
export CARGO_TARGET_DIR="$target"
bin="$target/release"

tools=(cargo curl)
if [[ $walk == front-end ]]; then tools+=(openssl); fi
for tool in "${tools[@]}"; do
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
  local name=$1 program=$2 log="$work/$1.log" line vars=()
  shift 2
  while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
  if (($#)); then shift; fi
  : >"$log"
  env -i PATH="$PATH" ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} \
    BIND_ADDR=127.0.0.1 PORT=0 LOG_FORMAT=json SHUTDOWN_GRACE=2s ${vars[@]+"${vars[@]}"} \
    "$bin/$program" "$@" >>"$log" 2>&1 </dev/null &
  pid=$!
  pids+=("$pid")
  await "$name" "$pid" listening 0 "$START_TIMEOUT" || return 1
  line=$(grep -m1 '"message":"listening"' "$log")
  addr=$(sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' <<<"$line")
  [[ -n $addr ]] || { echo "local.sh: $name logged no address" >&2; return 1; }
}

# logged NAME MESSAGE: how many times NAME has logged MESSAGE.
logged() {
  grep -c "\"message\":\"$2\"" "$work/$1.log" || true
}

# await NAME PID MESSAGE COUNT TIMEOUT: waits until NAME (running as PID) has
# logged MESSAGE more than COUNT times; fails after TIMEOUT seconds.
await() {
  local name=$1 pid=$2 message=$3 count=$4 deadline=$((SECONDS + $5))
  while (($(logged "$name" "$message") <= count)); do
    if ! alive "$pid"; then
      echo "local.sh: $name exited while waiting for \"$message\":" >&2
      tail -n 20 "$work/$name.log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "local.sh: $name did not log \"$message\" in $5 s:" >&2
      tail -n 20 "$work/$name.log" >&2
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
  token=$(identity_token "$receiving_url")
  while :; do
    status=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' \
      -H "Authorization: Bearer $token" "$receiving_url/" 2>/dev/null || true)
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
  receiver_pid=$pid receiver_port=${addr##*:} receiver_app="http://$addr"
}
deploy_private_receiver() { # ALLOWED_INVOKERS
  deploy_receiver AUTH_AUDIENCE="$receiving_url" \
    AUTH_JWKS_URL="$emulator_url/oauth2/v3/certs" AUTH_ALLOWED_INVOKERS="$1"
  wait_for_keys
}
deploy_sender() { # [VAR=VALUE...]
  if [[ -n ${sender_pid-} ]]; then stop "$sender_pid"; fi
  start sender sender PORT="${sender_port:-0}" RECEIVING_SERVICE_URL="$receiving_url/" "$@"
  sender_pid=$pid sender_port=${addr##*:} sender_app="http://$addr"
}

# front_end NAME UPSTREAM: cloud-run-ingress in front of NAME's container,
# with the policy in $work/NAME-policy.json and the emulators' keys. Sets
# $pid and $url. Cloud Run names a service's URL at its first deploy, and
# callers' tokens must name it as their audience; here the kernel picks the
# port, so the front end starts once to be given one, then again on it with
# that URL as its audience.
front_end() {
  local name=$1 upstream=$2 flags
  flags=(--upstream "$upstream" --policy "$work/$name-policy.json" --jwks-url "$jwks_url")
  start "$name-front-end" cloud-run-ingress -- "${flags[@]}" --audience http://127.0.0.1
  stop "$pid"
  url="http://$addr"
  start "$name-front-end" cloud-run-ingress PORT="${addr##*:}" -- "${flags[@]}" --audience "$url"
  # Stage 3 must not race the first fetch of the keys.
  await "$name-front-end" "$pid" 'signing keys loaded' 0 "$START_TIMEOUT"
}

# receiver_policy [MEMBER...]: the receiver's IAM policy with these members
# on roles/run.invoker, and the project's automatic grant: Editor to the
# default compute account.
receiver_policy() {
  local members='' bindings=''
  if (($#)); then
    members=$(printf ', "%s"' "$@")
    bindings="{\"role\": \"roles/run.invoker\", \"members\": [${members#, }]}"
  fi
  printf '{\n  "bindings": [%s],\n  "projectBindings": [{"role": "roles/editor", "members": ["serviceAccount:%s"]}]\n}\n' \
    "$bindings" "$COMPUTE_SA"
}

# set_policy JSON: writes the receiver's policy file in place, as an editor
# would, and waits until its front end has re-read it, no restart.
set_policy() {
  local before
  before=$(logged receiver-front-end 'IAM policy reloaded')
  printf '%s\n' "$1" >"$work/receiver-policy.json"
  await receiver-front-end "$receiver_front_pid" 'IAM policy reloaded' "$before" "$RELOAD_TIMEOUT"
}

failures=0
# The logs a failed stage shows the end of.
logs=(receiver sender)
# stage N DESCRIPTION STATUS BODY: curls the sender ($entry) and prints one
# line with what it got. BODY is the exact body expected; `refusal`: the
# receiver's refusal relayed (the sender's prefix, no hello); `forbidden`:
# Cloud Run's 403 page relayed.
stage() {
  local n=$1 what=$2 want_status=$3 want_body=$4 status body shown ok=1 log
  local title='<title>([^<]*)</title>'
  status=$(curl -sS --noproxy '*' --max-time 15 -o "$work/body" -w '%{http_code}' \
    "$entry/" 2>"$work/curl.err") || status=000
  body=$(cat "$work/body" 2>/dev/null || true)
  [[ $status == "$want_status" ]] || ok=0
  case $want_body in
    refusal) [[ $body == "$PREFIX"* && $body != *"$HELLO"* ]] || ok=0 ;;
    forbidden)
      [[ $body == "$PREFIX"* && $body != *"$HELLO"* && $body == *'<title>403 Forbidden</title>'* ]] || ok=0
      ;;
    *) [[ $body == "$want_body" ]] || ok=0 ;;
  esac
  # An HTML page is shown by its title: its first line says nothing.
  if [[ $body == "$PREFIX"*'<html>'* && $body =~ $title ]]; then
    shown="$PREFIX<html>...${BASH_REMATCH[0]}...</html>"
  else
    shown=$(head -n 1 <<<"$body")
  fi
  if ((${#shown} > 90)); then shown="${shown:0:87}..."; fi
  printf '  stage %s  %-44s %s  %s\n' "$n" "$what" "$status" "$shown"
  if ((ok)); then return 0; fi
  failures=$((failures + 1))
  case $want_body in
    refusal) printf '           FAILED: expected %s with the refusal relayed\n' "$want_status" ;;
    forbidden) printf "           FAILED: expected %s with Cloud Run's 403 page relayed\n" "$want_status" ;;
    *) printf '           FAILED: expected %s "%s"\n' "$want_status" "$want_body" ;;
  esac
  if [[ -s $work/curl.err ]]; then sed 's/^/           curl: /' "$work/curl.err"; fi
  for log in "${logs[@]}"; do
    echo "           the $log's last log lines:"
    tail -n 5 "$work/$log.log" | sed 's/^/             /'
  done
}

# The tutorial as it runs on Cloud Run: the front end decides.
walk_front_end() {
  stages=5
  logs=(receiver-front-end receiver sender-front-end sender)
  # One key for both emulators: the front end trusts one JWKS, whichever
  # account the sender runs as.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/signing-key.pem" 2>/dev/null
  local emulator_flags=(--project-number "$PROJECT_NUMBER" --key-file "$work/signing-key.pem")
  start metadata-compute metadata-emulator -- --email default-compute "${emulator_flags[@]}"
  compute_metadata=$addr
  start metadata-calling-sa metadata-emulator -- --email "$CALLER" "${emulator_flags[@]}"
  caller_metadata=$addr
  jwks_url="http://$compute_metadata/oauth2/v3/certs"

  # Tutorial: deploy both services, public (--allow-unauthenticated).
  receiver_policy allUsers >"$work/receiver-policy.json"
  printf '{"bindings": [{"role": "roles/run.invoker", "members": ["allUsers"]}]}\n' \
    >"$work/sender-policy.json"
  deploy_receiver
  front_end receiver "$receiver_app"
  receiver_front_pid=$pid receiving_url=$url
  deploy_sender ID_TOKEN_SOURCE=none
  front_end sender "$sender_app"
  entry=$url
  stage 1 "both public, sender sends no token" 200 "$PREFIX$HELLO"

  # Tutorial: redeploy the receiver with --no-allow-unauthenticated, which
  # drops the allUsers binding; the container is the same.
  set_policy "$(receiver_policy)"
  stage 2 "receiver private, sender sends no token" 403 forbidden

  # Tutorial: the sender fetches ID tokens, as the account it runs as: the
  # default compute account, Editor on the project.
  deploy_sender ID_TOKEN_SOURCE=metadata GCE_METADATA_HOST="$compute_metadata"
  stage 3 "sender's tokens: default compute account" 200 "$PREFIX$HELLO"

  # Tutorial: redeploy the sender with --service-account calling-service-sa.
  deploy_sender ID_TOKEN_SOURCE=metadata GCE_METADATA_HOST="$caller_metadata"
  stage 4 "sender redeployed as calling-service-sa" 403 forbidden

  # Tutorial: gcloud run services add-iam-policy-binding receiving-service
  # --member=serviceAccount:calling-service-sa@... --role=roles/run.invoker
  set_policy "$(receiver_policy "serviceAccount:$CALLER")"
  stage 5 "run.invoker granted to calling-service-sa" 200 "$PREFIX$HELLO"
}

# The receiver verifying tokens itself, no front end.
walk_in_app() {
  stages=4
  start emulator metadata-emulator -- --email "$CALLER"
  emulator_url="http://$addr"

  # Tutorial: deploy both services, public.
  deploy_receiver
  receiving_url=$receiver_app
  deploy_sender ID_TOKEN_SOURCE=none
  entry=$sender_app
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
}

echo "==> cargo build --release --locked (target dir: $target)" >&2
(cd "$root" && cargo build --release --locked) >&2

if [[ $walk == front-end ]]; then
  echo "==> the tutorial, offline, behind Cloud Run's front end (cloud-run-ingress)"
  walk_front_end
else
  echo "==> the tutorial, offline, the receiver verifying tokens itself"
  walk_in_app
fi

if [[ $mode == check ]]; then
  if ((failures)); then
    echo "==> $failures of $stages stages failed" >&2
    exit 1
  fi
  echo "==> all $stages stages hold"
  exit 0
fi

if ((failures)); then
  echo "==> $failures of $stages stages failed (see above); the last stage runs anyway" >&2
fi
if [[ $walk == front-end ]]; then
  token_url="http://$compute_metadata/computeMetadata/v1/instance/service-accounts/default/identity"
  cat <<EOF

The last stage is running; Ctrl-C stops everything.
  metadata server      http://$compute_metadata  ID tokens for $COMPUTE_SA
  metadata server      http://$caller_metadata  ID tokens for $CALLER (the same key)
  receiver             $receiver_app  the container: checks nothing
  receiver front end   $receiving_url  checks tokens against $work/receiver-policy.json
  sender               $sender_app  the container: relays with a token from its metadata server
  sender front end     $entry  public (allUsers)

Try:
  curl $entry/
  curl -i $receiving_url/
  TOKEN=\$(curl -s -H 'Metadata-Flavor: Google' '$token_url?audience=$receiving_url&format=full')
  curl -H "Authorization: Bearer \$TOKEN" $receiving_url/
  curl -H "Authorization: Bearer \$TOKEN" $receiver_app/   # the container takes anything
The receiver's IAM policy is a file; edit it (drop calling-service-sa, or add
"allUsers") and its front end follows within 2 s, no restart:
  $work/receiver-policy.json

Logs, one JSON object per line (removed on exit): $work/
EOF
else
  token_url="$emulator_url/computeMetadata/v1/instance/service-accounts/default/identity"
  cat <<EOF

The last stage is running; Ctrl-C stops everything.
  metadata emulator  $emulator_url  mints ID tokens for $CALLER
  receiver           $receiver_app  verifies ID tokens; allows $OTHER and $CALLER
  sender             $sender_app  relays to the receiver with a token from the emulator

Try:
  curl $sender_app/
  curl -i $receiver_app/
  TOKEN=\$(curl -s -H 'Metadata-Flavor: Google' '$token_url?audience=$receiver_app&format=full')
  curl -H "Authorization: Bearer \$TOKEN" $receiver_app/
  curl $emulator_url/oauth2/v3/certs

Logs, one JSON object per line (removed on exit): $work/
EOF
fi
trap 'echo; echo "==> stopping"; exit 0' INT TERM
# all_alive: true while every service started is still running.
all_alive() {
  local pid
  for pid in "${pids[@]}"; do alive "$pid" || return 1; done
}
# Returns at once on Ctrl-C, or when a service exits on its own.
while all_alive; do
  sleep 1 &
  pids+=("$!")
  wait "$!" || true
  forget "$!"
done
echo "==> a service exited unexpectedly; stopping the others" >&2
exit 1

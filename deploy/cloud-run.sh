#!/usr/bin/env bash
# Builds and deploys the receiver and sender to Cloud Run and walks through
# Google's service-to-service authentication tutorial. Run with --help.
set -euo pipefail

readonly RECEIVER_SERVICE=receiving-service
readonly SENDER_SERVICE=sending-service
readonly SA_NAME=calling-service-sa
readonly SA_DISPLAY_NAME="Calling Service Account"
APIS=(
  run.googleapis.com
  cloudbuild.googleapis.com
  iamcredentials.googleapis.com
  artifactregistry.googleapis.com
  iam.googleapis.com
)
readonly APIS
readonly RECEIVER_HELLO="Hello from the receiving service!"
readonly SENDER_PREFIX="Response from receiving service: "

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly CLOUDBUILD_CONFIG=deploy/cloudbuild.yaml

AR_REPOSITORY=${AR_REPOSITORY:-cloud-run-auth}
IMAGE_TAG=${IMAGE_TAG:-latest}
IAM_RETRIES=${IAM_RETRIES:-12}
IAM_WAIT_SECONDS=${IAM_WAIT_SECONDS:-10}
CURL_MAX_TIME=${CURL_MAX_TIME:-30}
CLOUDBUILD_MACHINE_TYPE=${CLOUDBUILD_MACHINE_TYPE:-}

usage() {
  cat <<EOF
Usage: deploy/cloud-run.sh COMMAND [OPTIONS]

Deploys receiving-service and sending-service to Cloud Run and runs Google's
service-to-service authentication tutorial, using Artifact Registry and Cloud
Build. Every command can be run again safely, and prints each gcloud command
(as "+ gcloud ...") before running it.

Commands:
  setup                  Check that gcloud is installed and logged in, enable the
                         run, cloudbuild, iamcredentials, artifactregistry and iam
                         APIs, and create the Artifact Registry Docker repository
                         if it is missing.
  build receiver|sender|all
                         Build Dockerfile.<service> with Cloud Build
                         (deploy/cloudbuild.yaml) and push the image to
                         REGION-docker.pkg.dev/PROJECT_ID/AR_REPOSITORY/<service>:IMAGE_TAG.
  deploy-receiver [--private]
                         Deploy $RECEIVER_SERVICE: public (--allow-unauthenticated)
                         by default, --no-allow-unauthenticated with --private
                         (plus --invoker-iam-check where the service had the
                         invoker IAM check turned off).
  create-sa              Create the service account $SA_NAME if it is missing.
  deploy-sender [--no-token] [--service-account NAME]
                         Deploy $SENDER_SERVICE (public) with RECEIVING_SERVICE_URL
                         set to the receiver's URL. --no-token sets
                         ID_TOKEN_SOURCE=none (send no ID token); without it the
                         sender gets ID tokens from the metadata server.
                         --service-account runs it as NAME (an account id in this
                         project, or a full email); without it, as the default
                         compute service account.
  grant [--service-account NAME]
                         Grant roles/run.invoker on $RECEIVER_SERVICE to the
                         service account (default $SA_NAME).
  revoke [--service-account NAME]
                         Remove that grant if it is there.
  check                  Request the sender's URL and print the status and body.
  tutorial [--skip-build]
                         Run the whole tutorial, checking each stage with 'check':
                           0. setup, build all (unless --skip-build), revoke
                           1. both public, sender sends no token     -> 200
                           2. receiver private                       -> 403
                           3. sender sends an ID token as the default
                              compute service account                -> 200
                              (403 where the organisation policy
                              iam.automaticIamGrantsForDefaultServiceAccounts
                              kept Editor from that account: explained, not fatal)
                           4. sender runs as $SA_NAME       -> 403
                           5. grant run.invoker to $SA_NAME -> 200
                         It stops at the first unexpected answer. IAM changes take
                         time to reach Cloud Run, so each stage is retried up to
                         IAM_RETRIES times, IAM_WAIT_SECONDS apart.
  teardown [--yes]       Delete both services, the service account and the two
                         images (asks first unless --yes). Keeps the repository.

Environment:
  PROJECT_ID             Google Cloud project (default: gcloud config get-value project)
  REGION                 Cloud Run and Artifact Registry region (default: gcloud config
                         get-value run/region, then compute/region)
  AR_REPOSITORY          Artifact Registry repository (default: cloud-run-auth)
  IMAGE_TAG              Image tag (default: latest)
  IAM_RETRIES            Checks per tutorial stage before giving up (default: 12)
  IAM_WAIT_SECONDS       Seconds between those checks (default: 10)
  CURL_MAX_TIME          Timeout in seconds of each request to the sender (default: 30)
  CLOUDBUILD_MACHINE_TYPE
                         Passed to 'gcloud builds submit --machine-type', e.g.
                         e2-highcpu-8 (faster, outside the free tier; default: unset)
  Each value (and each --service-account NAME) is checked against Google's rule
  for it before any gcloud call that uses it: a project id is 6-30 lowercase
  letters, digits or hyphens starting with a letter; a region looks like
  us-central1; a repository id is lowercase letters, digits and hyphens; a tag is
  letters, digits, '_', '.' and '-'. A value breaking its rule stops the script
  with one line naming the variable.

Example, from a fresh project with billing:
  gcloud auth login
  gcloud config set project PROJECT_ID
  gcloud config set run/region us-central1
  deploy/cloud-run.sh tutorial
  deploy/cloud-run.sh teardown
EOF
}

log() { printf '%s\n' "$*" >&2; }

die() {
  printf 'cloud-run.sh: error: %s\n' "$*" >&2
  exit 1
}

usage_error() {
  printf 'cloud-run.sh: %s\n' "$*" >&2
  printf "Run 'deploy/cloud-run.sh --help' for usage.\n" >&2
  exit 2
}

# Prints a command on stderr as "+ cmd args", quoting only what needs it, so
# it can be pasted back into a shell.
show() {
  local out="+" arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=" $arg"
    elif [[ $arg == *\'* && $arg != *[\"\$\`\\!]* ]]; then
      out+=" \"$arg\""
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "$out" >&2
}

run() {
  show "$@"
  "$@"
}

# For existence checks: gcloud's own "not found" noise is dropped.
probe() {
  show "$@"
  "$@" 2>/dev/null
}

require_gcloud() {
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud (the Google Cloud CLI) is not installed or not on PATH: install it from https://cloud.google.com/sdk/docs/install, then run 'gcloud auth login'"
}

require_login() {
  local account
  account=$(probe gcloud auth list --filter=status:ACTIVE --format='value(account)') || account=""
  [[ -n $account ]] || die "gcloud is not logged in: run 'gcloud auth login'"
  log "gcloud is logged in as $account"
}

config_value() {
  probe gcloud config get-value "$1" || true
}

# Every value below ends up inside a gcloud argument: a --substitutions list
# (where a comma starts another substitution), an image path (where a slash
# starts another path segment) or a resource name. Each is held to Google's own
# rule for it, which rules out the commas, spaces, slashes and dot segments
# that would climb out.
readonly PROJECT_ID_RULE='^[a-z][a-z0-9-]{4,28}[a-z0-9]$'
readonly PROJECT_ID_WHAT="a project id (6 to 30 lowercase letters, digits or hyphens, starting with a letter, not ending with a hyphen)"
readonly REGION_RULE='^[a-z]+-[a-z]+[0-9]+$'
readonly REGION_WHAT="a region such as us-central1 (lowercase letters, one hyphen, then letters and a number)"
readonly ACCOUNT_ID_RULE='^[a-z][a-z0-9-]{4,28}[a-z0-9]$'
readonly ACCOUNT_EMAIL_RULE='^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+$'

# shown VALUE: VALUE quoted for one line of an error message, cut short.
shown() {
  local value=$1
  ((${#value} <= 64)) || value="${value:0:61}..."
  if [[ $value == *[![:print:]]* || $value == *\'* ]]; then
    printf '%q' "$value"
  else
    printf "'%s'" "$value"
  fi
}

# check_value NAME VALUE RULE WHAT [SOURCE]: dies naming NAME unless VALUE matches
# the regular expression RULE.
check_value() {
  local name=$1 value=$2 rule=$3 what=$4 source=${5:-}
  [[ $value =~ $rule ]] && return 0
  die "${name}${source} must be ${what}, not $(shown "$value")"
}

# The settings that come from the environment, checked before any gcloud call.
check_environment() {
  [[ -z ${PROJECT_ID:-} ]] || check_value PROJECT_ID "$PROJECT_ID" "$PROJECT_ID_RULE" "$PROJECT_ID_WHAT"
  [[ -z ${REGION:-} ]] || check_value REGION "$REGION" "$REGION_RULE" "$REGION_WHAT"
  check_value AR_REPOSITORY "$AR_REPOSITORY" '^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$' \
    "an Artifact Registry repository id (up to 63 lowercase letters, digits or hyphens, starting with a letter, ending with a letter or digit)"
  check_value IMAGE_TAG "$IMAGE_TAG" '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' \
    "a Docker image tag (up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-')"
  [[ -z $CLOUDBUILD_MACHINE_TYPE ]] || check_value CLOUDBUILD_MACHINE_TYPE "$CLOUDBUILD_MACHINE_TYPE" \
    '^[a-z0-9][a-z0-9-]{0,62}$' "a machine type such as e2-highcpu-8 (lowercase letters, digits and hyphens)"
  check_value IAM_RETRIES "$IAM_RETRIES" '^[1-9][0-9]{0,3}$' "a positive integer below 10000"
  check_value IAM_WAIT_SECONDS "$IAM_WAIT_SECONDS" '^[0-9]{1,4}$' "a whole number of seconds below 10000"
  check_value CURL_MAX_TIME "$CURL_MAX_TIME" '^[1-9][0-9]{0,4}$' "a positive whole number of seconds"
}

resolve_settings() {
  check_environment
  require_gcloud
  if [[ -z ${PROJECT_ID:-} ]]; then
    PROJECT_ID=$(config_value project)
    [[ -z $PROJECT_ID ]] ||
      check_value PROJECT_ID "$PROJECT_ID" "$PROJECT_ID_RULE" "$PROJECT_ID_WHAT" " (from 'gcloud config get-value project')"
  fi
  [[ -n $PROJECT_ID ]] ||
    die "no project: set PROJECT_ID, or run 'gcloud config set project PROJECT_ID'"
  if [[ -z ${REGION:-} ]]; then
    local key=run/region
    REGION=$(config_value "$key")
    [[ -n $REGION ]] || {
      key=compute/region
      REGION=$(config_value "$key")
    }
    [[ -z $REGION ]] ||
      check_value REGION "$REGION" "$REGION_RULE" "$REGION_WHAT" " (from 'gcloud config get-value $key')"
  fi
  [[ -n $REGION ]] ||
    die "no region: set REGION, or run 'gcloud config set run/region REGION' (e.g. us-central1)"
  REGISTRY="${REGION}-docker.pkg.dev/${PROJECT_ID}/${AR_REPOSITORY}"
  SA_EMAIL="${SA_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"
  log "project $PROJECT_ID, region $REGION, images in $REGISTRY"
}

# gcloud with the project made explicit, so PROJECT_ID wins over gcloud config.
gcp() {
  run gcloud "$@" --project "$PROJECT_ID"
}

gcp_probe() {
  probe gcloud "$@" --project "$PROJECT_ID"
}

image() {
  printf '%s/%s:%s' "$REGISTRY" "$1" "$IMAGE_TAG"
}

# check_account NAME: dies unless NAME is an account id or an email.
check_account() {
  if [[ $1 == *@* ]]; then
    check_value --service-account "$1" "$ACCOUNT_EMAIL_RULE" "a service account email (one '@', letters, digits, '.', '_' or '-')"
  else
    check_value --service-account "$1" "$ACCOUNT_ID_RULE" \
      "an account id (6 to 30 lowercase letters, digits or hyphens, starting with a letter) or an email"
  fi
}

sa_email() {
  if [[ $1 == *@* ]]; then
    printf '%s' "$1"
  else
    printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT_ID"
  fi
}

service_url() {
  gcp_probe run services describe "$1" --region "$REGION" --format='value(status.url)'
}

service_exists() {
  gcp_probe run services describe "$1" --region "$REGION" --format='value(metadata.name)' >/dev/null
}

# Runs "$@" until it succeeds, at most IAM_RETRIES times.
wait_until() {
  local what=$1 attempt=1
  shift
  until "$@" >/dev/null; do
    ((attempt < IAM_RETRIES)) || die "gave up waiting for $what after $IAM_RETRIES attempts"
    log "waiting for $what: retrying in ${IAM_WAIT_SECONDS}s (attempt $((attempt + 1)) of $IAM_RETRIES)"
    sleep "$IAM_WAIT_SECONDS"
    attempt=$((attempt + 1))
  done
}

cmd_setup() {
  require_login
  gcp services enable "${APIS[@]}"
  if gcp_probe artifacts repositories describe "$AR_REPOSITORY" --location "$REGION" >/dev/null; then
    log "Artifact Registry repository $AR_REPOSITORY already exists in $REGION"
  else
    gcp artifacts repositories create "$AR_REPOSITORY" --repository-format=docker \
      --location "$REGION" --description "Images for the Cloud Run service-to-service tutorial"
  fi
}

cmd_build() {
  (($# == 1)) || usage_error "build: expected one of receiver, sender, all"
  local services service
  case $1 in
    receiver | sender) services=("$1") ;;
    all) services=(receiver sender) ;;
    *) usage_error "build: expected one of receiver, sender, all, not '$1'" ;;
  esac
  local machine=()
  [[ -z $CLOUDBUILD_MACHINE_TYPE ]] || machine=(--machine-type "$CLOUDBUILD_MACHINE_TYPE")
  cd "$ROOT"
  for service in "${services[@]}"; do
    [[ -f Dockerfile.$service ]] || die "Dockerfile.$service not found in $ROOT"
    gcp builds submit --config "$CLOUDBUILD_CONFIG" \
      --substitutions="_SERVICE=${service},_REGION=${REGION},_REPOSITORY=${AR_REPOSITORY},_TAG=${IMAGE_TAG}" \
      ${machine[@]+"${machine[@]}"} .
    log "built $(image "$service")"
  done
}

# Cloud Run sends an instance traffic only once it answers GET /ready with
# 200: the sender once it holds an ID token, a verifying receiver once it
# holds signing keys (both answer at once otherwise). An HTTP probe needs
# HTTP/1: a service deployed with --use-http2 needs a TCP probe instead.
readonly STARTUP_PROBE='httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60'

cmd_deploy_receiver() {
  local private=false
  while (($#)); do
    case $1 in
      --private) private=true ;;
      *) usage_error "deploy-receiver: unknown option '$1'" ;;
    esac
    shift
  done
  local access=(--allow-unauthenticated)
  if $private; then
    access=(--no-allow-unauthenticated)
    # A service with the invoker IAM check turned off stays open whatever its
    # IAM policy says; turn the check back on.
    local disabled
    disabled=$(gcp_probe run services describe "$RECEIVER_SERVICE" --region "$REGION" \
      --format="value(metadata.annotations.'run.googleapis.com/invoker-iam-disabled')") || disabled=""
    [[ $disabled != true ]] || access+=(--invoker-iam-check)
  fi
  gcp run deploy "$RECEIVER_SERVICE" --image "$(image receiver)" --region "$REGION" "${access[@]}" \
    --startup-probe="$STARTUP_PROBE"
}

cmd_create_sa() {
  if gcp_probe iam service-accounts describe "$SA_EMAIL" >/dev/null; then
    log "service account $SA_EMAIL already exists"
    return
  fi
  gcp iam service-accounts create "$SA_NAME" --display-name "$SA_DISPLAY_NAME"
  # A new account takes a moment to be visible to other services.
  wait_until "service account $SA_EMAIL" gcp_probe iam service-accounts describe "$SA_EMAIL"
}

cmd_deploy_sender() {
  local token_source=metadata account=""
  while (($#)); do
    case $1 in
      --no-token) token_source=none ;;
      --service-account)
        (($# >= 2)) || usage_error "deploy-sender: --service-account needs a NAME"
        account=$2
        shift
        ;;
      --service-account=*) account=${1#*=} ;;
      *) usage_error "deploy-sender: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -z $account ]] || check_account "$account"
  local receiver_url
  receiver_url=$(service_url "$RECEIVER_SERVICE") || receiver_url=""
  [[ -n $receiver_url ]] ||
    die "$RECEIVER_SERVICE not found in $REGION: run 'deploy/cloud-run.sh deploy-receiver' first"
  # It goes into a comma-separated --set-env-vars list.
  [[ $receiver_url =~ ^https://[A-Za-z0-9.-]+$ ]] ||
    die "the URL gcloud gives for $RECEIVER_SERVICE is not a plain https://HOST URL: $(shown "$receiver_url")"

  local identity=()
  if [[ -n $account ]]; then
    identity=(--service-account "$(sa_email "$account")")
  else
    # gcloud run deploy keeps a service's account when none is given: after
    # a run as another account, name the default compute one again.
    local current
    current=$(gcp_probe run services describe "$SENDER_SERVICE" --region "$REGION" \
      --format='value(spec.template.spec.serviceAccountName)') || current=""
    if [[ -n $current && $current != *-compute@developer.gserviceaccount.com ]]; then
      local number
      number=$(gcp projects describe "$PROJECT_ID" --format='value(projectNumber)')
      [[ $number =~ ^[0-9]+$ ]] || die "could not read the project number of $PROJECT_ID"
      log "$SENDER_SERVICE runs as $current: switching it back to the default compute service account"
      identity=(--service-account "${number}-compute@developer.gserviceaccount.com")
    fi
  fi
  gcp run deploy "$SENDER_SERVICE" --image "$(image sender)" --region "$REGION" \
    --allow-unauthenticated --startup-probe="$STARTUP_PROBE" \
    --set-env-vars "RECEIVING_SERVICE_URL=${receiver_url},ID_TOKEN_SOURCE=${token_source}" \
    ${identity[@]+"${identity[@]}"}
}

parse_account_option() {
  local cmd=$1
  shift
  ACCOUNT=$SA_NAME
  while (($#)); do
    case $1 in
      --service-account)
        (($# >= 2)) || usage_error "$cmd: --service-account needs a NAME"
        ACCOUNT=$2
        shift
        ;;
      --service-account=*) ACCOUNT=${1#*=} ;;
      *) usage_error "$cmd: unknown option '$1'" ;;
    esac
    shift
  done
  check_account "$ACCOUNT"
  ACCOUNT=$(sa_email "$ACCOUNT")
}

cmd_grant() {
  parse_account_option grant "$@"
  gcp run services add-iam-policy-binding "$RECEIVER_SERVICE" --region "$REGION" \
    --member="serviceAccount:${ACCOUNT}" --role=roles/run.invoker
}

cmd_revoke() {
  parse_account_option revoke "$@"
  local members
  members=$(gcp_probe run services get-iam-policy "$RECEIVER_SERVICE" --region "$REGION" \
    --flatten='bindings[].members' --filter='bindings.role:roles/run.invoker' \
    --format='value(bindings.members)') || members=""
  if ! grep -Fxq "serviceAccount:${ACCOUNT}" <<<"$members"; then
    log "$ACCOUNT has no run.invoker grant on $RECEIVER_SERVICE"
    return
  fi
  gcp run services remove-iam-policy-binding "$RECEIVER_SERVICE" --region "$REGION" \
    --member="serviceAccount:${ACCOUNT}" --role=roles/run.invoker
}

# Requests the sender once. Sets STATUS (the HTTP status, 000 when the request
# failed), BODY, and OUTCOME: the receiver's answer as the tutorial counts it.
# The Go sender relays the receiver's 403 page inside a 200; a sender may also
# pass the 403 status on. Either counts as 403.
request_sender() {
  local url body_file
  url=$(service_url "$SENDER_SERVICE") || url=""
  [[ -n $url ]] || die "$SENDER_SERVICE not found in $REGION: run 'deploy/cloud-run.sh deploy-sender' first"
  body_file=$(mktemp)
  show curl -sS --max-time "$CURL_MAX_TIME" -o "$body_file" -w '%{http_code}' "$url"
  STATUS=$(curl -sS --max-time "$CURL_MAX_TIME" -o "$body_file" -w '%{http_code}' "$url") || STATUS=000
  BODY=$(cat "$body_file")
  rm -f "$body_file"
  OUTCOME=$STATUS
  if [[ $STATUS == 200 ]]; then
    if [[ $BODY == *"403 Forbidden"* ]]; then
      OUTCOME=403
    elif [[ $BODY != "${SENDER_PREFIX}${RECEIVER_HELLO}" ]]; then
      OUTCOME="200 with an unexpected body"
    fi
  fi
  printf 'HTTP %s\n%s\n' "$STATUS" "$BODY"
}

cmd_check() {
  request_sender
}

# check_stage N WANT [TOLERATED]: requests the sender until the outcome is
# WANT, at most IAM_RETRIES times. Returns 3 at once on TOLERATED.
check_stage() {
  local stage=$1 want=$2 tolerated=${3:-} attempt=1
  while :; do
    request_sender
    if [[ $OUTCOME == "$want" ]]; then
      log "stage $stage: got $want as expected"
      return 0
    fi
    if [[ -n $tolerated && $OUTCOME == "$tolerated" ]]; then
      return 3
    fi
    if ((attempt >= IAM_RETRIES)); then
      stage_failed "$stage" "$want"
    fi
    log "stage $stage: got $OUTCOME, expected $want. IAM changes can take a minute or two to reach Cloud Run: retrying in ${IAM_WAIT_SECONDS}s (attempt $((attempt + 1)) of $IAM_RETRIES)"
    sleep "$IAM_WAIT_SECONDS"
    attempt=$((attempt + 1))
  done
}

stage_failed() {
  local stage=$1 want=$2 hint=""
  case "$stage/$OUTCOME" in
    1/403) hint=" A service is not public: look above for a gcloud warning that setting the IAM policy failed (an organisation policy such as Domain restricted sharing can refuse allUsers)." ;;
    */000) hint=" The request to the sender failed (see curl's message above)." ;;
    */5??) hint=" See the services' logs: gcloud run services logs read $SENDER_SERVICE --region $REGION --project $PROJECT_ID" ;;
  esac
  die "stage $stage: expected $want, still got $OUTCOME after $IAM_RETRIES attempts ${IAM_WAIT_SECONDS}s apart; stopping.${hint}"
}

stage() {
  log ""
  log "=== Stage $1: $2"
}

cmd_tutorial() {
  local build=true
  while (($#)); do
    case $1 in
      --skip-build) build=false ;;
      *) usage_error "tutorial: unknown option '$1'" ;;
    esac
    shift
  done

  stage 0 "setup, images, and no run.invoker grant left from an earlier run"
  cmd_setup
  if $build; then
    cmd_build all
  fi
  cmd_revoke --service-account "$SA_NAME"

  stage 1 "both services public, the sender sends no token: expect 200"
  cmd_deploy_receiver
  cmd_deploy_sender --no-token
  check_stage 1 200

  stage 2 "receiver private (--no-allow-unauthenticated): expect 403"
  cmd_deploy_receiver --private
  check_stage 2 403

  stage 3 "the sender sends an ID token as the default compute service account: expect 200"
  local default_account_note="the default compute service account could call the receiver (it has Editor)"
  cmd_deploy_sender
  if ! check_stage 3 200 403; then
    default_account_note="the default compute service account could not call the receiver"
    log "stage 3: got 403. The tutorial expects 200 here only because the default compute"
    log "service account is automatically granted Editor, which includes run.invoker. Where the"
    log "organisation policy iam.automaticIamGrantsForDefaultServiceAccounts is enforced (newer"
    log "organisations enforce it by default) that grant is withheld, so 403 is right for this"
    log "project. Going on: the next stages use a dedicated account."
  fi

  stage 4 "the sender runs as $SA_NAME, which has no grant: expect 403"
  cmd_create_sa
  cmd_deploy_sender --service-account "$SA_NAME"
  check_stage 4 403

  stage 5 "grant $SA_NAME run.invoker on $RECEIVER_SERVICE: expect 200"
  cmd_grant --service-account "$SA_NAME"
  check_stage 5 200

  log ""
  log "Tutorial complete: 1) public 200, 2) private 403, 3) $default_account_note,"
  log "4) $SA_NAME without a grant 403, 5) with run.invoker 200."
  log "Clean up with: deploy/cloud-run.sh teardown"
}

cmd_teardown() {
  local yes=false
  while (($#)); do
    case $1 in
      --yes | -y) yes=true ;;
      *) usage_error "teardown: unknown option '$1'" ;;
    esac
    shift
  done
  if ! $yes; then
    local answer=""
    printf 'Delete %s and %s in %s, service account %s and images %s/{receiver,sender} from project %s? [y/N] ' \
      "$RECEIVER_SERVICE" "$SENDER_SERVICE" "$REGION" "$SA_EMAIL" "$REGISTRY" "$PROJECT_ID" >&2
    read -r answer || true
    case $answer in
      y | Y | yes | YES) ;;
      *)
        log "nothing deleted"
        return
        ;;
    esac
  fi

  local service
  for service in "$SENDER_SERVICE" "$RECEIVER_SERVICE"; do
    if service_exists "$service"; then
      gcp run services delete "$service" --region "$REGION" --quiet
    else
      log "$service is already gone"
    fi
  done

  if gcp_probe iam service-accounts describe "$SA_EMAIL" >/dev/null; then
    gcp iam service-accounts delete "$SA_EMAIL" --quiet
  else
    log "service account $SA_EMAIL is already gone"
  fi

  local packages name
  packages=$(gcp_probe artifacts docker images list "$REGISTRY" --format='value(package)') || packages=""
  for name in receiver sender; do
    if grep -Fxq "$REGISTRY/$name" <<<"$packages"; then
      gcp artifacts docker images delete "$REGISTRY/$name" --quiet
    else
      log "image $REGISTRY/$name is already gone"
    fi
  done
  log "Kept the (now empty) repository $AR_REPOSITORY. To delete it too:"
  log "  gcloud artifacts repositories delete $AR_REPOSITORY --location $REGION --project $PROJECT_ID"
}

main() {
  (($#)) || {
    usage >&2
    exit 2
  }
  local command=$1
  shift
  case $command in
    -h | --help | help)
      usage
      return
      ;;
  esac
  local arg
  for arg in "$@"; do
    case $arg in
      -h | --help)
        usage
        return
        ;;
    esac
  done
  case $command in
    setup | create-sa | check)
      (($# == 0)) || usage_error "$command: unexpected argument '$1'"
      ;;
    build | deploy-receiver | deploy-sender | grant | revoke | tutorial | teardown) ;;
    *) usage_error "unknown command '$command'" ;;
  esac
  resolve_settings
  "cmd_${command//-/_}" "$@"
}

main "$@"

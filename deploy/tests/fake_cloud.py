"""A fake `gcloud` and `curl` for testing deploy/cloud-run.sh offline.

Both share one JSON state file: `gcloud` records what was enabled, built,
deployed and granted; `curl` answers a request to the sender the way Cloud Run
would given that state, so the tutorial's five stages come out as they would
on a real project. Every call is appended as one JSON line to a log. A command
or flag this fake does not know fails with exit status 2, so the tests notice
when the script drifts from what was checked. Nothing here touches the network.

The tests run one `Fake` per test in a thread (`serve`) and put small bash
wrappers named `gcloud` and `curl` first on PATH that hand each call to it
through a FIFO: starting Python for every call would make the suite crawl.
`fake_cloud.py gcloud|curl ARGS...` runs one call directly instead, with the
state and log files named by FAKE_CLOUD_STATE and FAKE_CLOUD_LOG.
"""

import contextlib
import errno
import io
import json
import os
import re
import sys
import threading
import time

HELLO = "Hello from the receiving service!"
PREFIX = "Response from receiving service: "
FORBIDDEN_PAGE = (
    '\n<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
    "<title>403 Forbidden</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
    "<h1>Error: Forbidden</h1>\n<h2>Your client does not have permission to get URL "
    "<code>/</code> from this server.</h2>\n<h2></h2>\n</body></html>\n"
)

# Flags that take a value when written as `--flag VALUE`.
VALUE_FLAGS = {
    "--project", "--region", "--location", "--image", "--service-account",
    "--set-env-vars", "--format", "--filter", "--flatten", "--config",
    "--substitutions", "--member", "--role", "--display-name", "--description",
    "--repository-format", "--machine-type",
}


def default_state():
    return {
        "config": {"project": "demo-project", "run/region": "us-central1", "compute/region": ""},
        "account": "you@example.com",
        "project_number": "123456789012",
        # Whether the default compute account got Editor (no org policy).
        "default_sa_has_editor": True,
        # How the sender passes on the receiver's 403: "status" (a 403 response)
        # or "go" (the Go sender's way: a 200 with the 403 page in the body).
        "sender_relay": "status",
        # IAM propagation: after one of the events in lag_on, curl keeps giving
        # the previous answer `lag` more times.
        "lag": 0,
        "lag_on": [],
        # Describes of a new service account that still fail after creating it.
        "sa_visible_after": 0,
        # A status/body curl answers instead of the simulation, for `answers` calls.
        "forced_answers": [],
        "enabled_apis": [],
        "repositories": [],
        "images": [],
        "service_accounts": [],
        "services": {},
        "stale": None,
    }


class Files:
    """Where the state and the call log live."""

    def __init__(self, state, log):
        self.state, self.log = state, log

    def load(self):
        with open(self.state) as f:
            return json.load(f)

    def save(self, state):
        with open(self.state + ".tmp", "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(self.state + ".tmp", self.state)

    def record(self, tool, argv, cwd):
        with open(self.log, "a") as f:
            f.write(json.dumps({"tool": tool, "argv": argv, "cwd": cwd}) + "\n")


class Usage(Exception):
    """A command or flag the fake does not know: exit 2."""


class Fail(Exception):
    """What gcloud would report as an error: exit 1."""


def parse(argv):
    positionals, flags = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
            elif arg in VALUE_FLAGS:
                if i + 1 >= len(argv):
                    raise Usage(f"{arg} needs a value")
                name, value = arg, argv[i + 1]
                i += 1
            else:
                name, value = arg, True
            if name in flags:
                raise Usage(f"{name} given twice")
            flags[name] = value
        else:
            positionals.append(arg)
        i += 1
    return positionals, flags


# ---------------------------------------------------------------------------
# What Cloud Run answers


def default_sa(state):
    return f"{state['project_number']}-compute@developer.gserviceaccount.com"


def is_public(svc):
    return svc["invoker_iam_disabled"] or "allUsers" in svc["invokers"]


def answer(state):
    """(curl exit code, HTTP status, body) for a request to the sender."""
    services = state["services"]
    sender = services.get("sending-service")
    if sender is None:
        return 6, "000", ""
    if not is_public(sender):
        return 0, "403", FORBIDDEN_PAGE
    receiver = services.get("receiving-service")
    target = sender["env"].get("RECEIVING_SERVICE_URL")
    if receiver is None or target != receiver["url"]:
        return 0, "502", "failed to reach the receiving service"
    allowed = is_public(receiver)
    if not allowed and sender["env"].get("ID_TOKEN_SOURCE", "metadata") == "metadata":
        account = sender["service_account"]
        allowed = f"serviceAccount:{account}" in receiver["invokers"] or (
            account == default_sa(state) and state["default_sa_has_editor"]
        )
    if allowed:
        return 0, "200", PREFIX + HELLO
    if state["sender_relay"] == "go":
        return 0, "200", PREFIX + FORBIDDEN_PAGE
    return 0, "403", PREFIX + FORBIDDEN_PAGE


def iam_changed(state, event, change):
    """Applies change(); with lag configured for event, curl goes on seeing the old answer."""
    before = answer(state)
    change()
    if event in state["lag_on"] and state["lag"] > 0:
        if not state["stale"]:
            state["stale"] = {"answer": list(before), "remaining": 0}
        state["stale"]["remaining"] = state["lag"]


# ---------------------------------------------------------------------------
# gcloud


def need(flags, *names):
    for name in names:
        if name not in flags:
            raise Usage(f"missing {name}")


def only(flags, *allowed):
    extra = set(flags) - set(allowed) - {"--project", "--quiet"}
    if extra:
        raise Usage(f"unexpected flags {sorted(extra)}")


def project(state, flags):
    if "--project" not in flags:
        raise Usage("missing --project (the script passes it on every call)")
    if flags["--project"] != state["config"]["project"] and not state.get("any_project"):
        raise Fail(f"project {flags['--project']} not found or permission denied")
    return flags["--project"]


def service(state, name, flags):
    svc = state["services"].get(name)
    if svc is None or svc["region"] != flags.get("--region"):
        raise Fail(f"Cannot find service [{name}]")
    return svc


def fmt(flags, fields):
    """Prints the field a --format=value(...) asks for."""
    f = flags.get("--format")
    m = re.fullmatch(r"value\((.+)\)", f or "")
    if not m or m.group(1) not in fields:
        raise Usage(f"unsupported --format {f!r}")
    value = fields[m.group(1)]
    for line in value if isinstance(value, list) else [value]:
        print(line)


def g_config(state, pos, flags, cwd):
    if pos[:2] != ["config", "get-value"] or len(pos) != 3:
        raise Usage("config: only get-value KEY")
    only(flags)
    value = state["config"].get(pos[2], "")
    if value:
        print(value)
    else:
        print("(unset)", file=sys.stderr)


def g_auth(state, pos, flags, cwd):
    if pos != ["auth", "list"] or flags.get("--filter") != "status:ACTIVE":
        raise Usage("auth: only list --filter=status:ACTIVE")
    only(flags, "--filter", "--format")
    fmt(flags, {"account": [state["account"]] if state["account"] else []})


def g_services(state, pos, flags, cwd):
    if pos[:2] != ["services", "enable"] or len(pos) < 3:
        raise Usage("services: only enable API...")
    only(flags)
    project(state, flags)
    for api in pos[2:]:
        if not api.endswith(".googleapis.com"):
            raise Fail(f"unknown service {api}")
        if api not in state["enabled_apis"]:
            state["enabled_apis"].append(api)
    print("Operation finished successfully.", file=sys.stderr)


def require_api(state, api):
    if api not in state["enabled_apis"]:
        raise Fail(f"PERMISSION_DENIED: {api} has not been used in project or it is disabled (accessNotConfigured)")


def g_artifacts(state, pos, flags, cwd):
    proj = project(state, flags)
    require_api(state, "artifactregistry.googleapis.com")
    if pos[1:3] == ["repositories", "describe"] and len(pos) == 4:
        only(flags, "--location")
        need(flags, "--location")
        if f"{flags['--location']}/{pos[3]}" not in state["repositories"]:
            raise Fail(f"NOT_FOUND: Requested entity was not found. repository {pos[3]}")
        print(f"name: projects/{proj}/locations/{flags['--location']}/repositories/{pos[3]}")
    elif pos[1:3] == ["repositories", "create"] and len(pos) == 4:
        only(flags, "--location", "--repository-format", "--description")
        need(flags, "--location", "--repository-format")
        if flags["--repository-format"] != "docker":
            raise Fail("this tutorial needs a docker repository")
        key = f"{flags['--location']}/{pos[3]}"
        if key in state["repositories"]:
            raise Fail(f"ALREADY_EXISTS: the repository already exists")
        state["repositories"].append(key)
    elif pos[1:4] == ["docker", "images", "list"] and len(pos) == 5:
        only(flags, "--format")
        location, project_, repo = repository_of(pos[4])
        if f"{location}/{repo}" not in state["repositories"] or project_ != proj:
            raise Fail("NOT_FOUND: repository not found")
        packages = [img.rsplit(":", 1)[0] for img in state["images"] if img.startswith(pos[4] + "/")]
        fmt(flags, {"package": packages})
    elif pos[1:4] == ["docker", "images", "delete"] and len(pos) == 5:
        only(flags)
        if ":" in pos[4].rsplit("/", 1)[1] or "@" in pos[4]:
            raise Usage("the script deletes whole images, not tags or digests")
        matching = [img for img in state["images"] if img.rsplit(":", 1)[0] == pos[4]]
        if not matching:
            raise Fail(f"NOT_FOUND: image {pos[4]} not found")
        state["images"] = [img for img in state["images"] if img not in matching]
    else:
        raise Usage("artifacts: unsupported command")


def repository_of(path):
    m = re.fullmatch(r"([a-z0-9-]+)-docker\.pkg\.dev/([^/]+)/([^/]+)", path)
    if not m:
        raise Fail(f"not an Artifact Registry repository path: {path}")
    return m.groups()


def substitute(text, subs):
    def repl(m):
        key = m.group(1) or m.group(2)
        if key not in subs:
            raise Fail(f"INVALID_ARGUMENT: key in the template {key!r} is not a valid built-in substitution")
        return subs[key]

    return re.sub(r"\$\{([A-Z0-9_]+)\}|\$([A-Z][A-Z0-9_]*)", repl, text)


def g_builds(state, pos, flags, cwd):
    import yaml  # only builds need it

    proj = project(state, flags)
    if pos[:2] != ["builds", "submit"] or len(pos) != 3:
        raise Usage("builds: only submit SOURCE")
    if "--tag" in flags:
        raise Usage("--tag builds only a file named Dockerfile")
    only(flags, "--config", "--substitutions", "--machine-type")
    need(flags, "--config")
    require_api(state, "cloudbuild.googleapis.com")
    with open(os.path.join(cwd, flags["--config"])) as f:
        text = f.read()
    config = yaml.safe_load(text)
    subs = dict(config.get("substitutions", {}))
    given = {}
    if "--substitutions" in flags:
        for item in flags["--substitutions"].split(","):
            key, _, value = item.partition("=")
            if not re.fullmatch(r"_[A-Z0-9_]+", key):
                raise Fail(f"invalid user substitution {key!r}")
            given[key] = value
    loose = (config.get("options") or {}).get("substitution_option") == "ALLOW_LOOSE"
    for key in given:
        if not loose and not re.search(r"\$\{?" + key + r"\b", text):
            raise Fail(f'INVALID_ARGUMENT: key "{key}" in the substitution data is not matched in the template')
    subs.update(given)
    subs["PROJECT_ID"] = proj
    source = os.path.join(cwd, pos[2])
    for step in config["steps"]:
        args = [substitute(a, subs) for a in step["args"]]
        if "-f" in args:
            dockerfile = os.path.join(source, args[args.index("-f") + 1])
            if not os.path.isfile(dockerfile):
                raise Fail(f"build step failed: unable to prepare context: {dockerfile} not found")
    for image in config.get("images", []):
        image = substitute(image, subs)
        location, project_, repo = repository_of(image.rsplit("/", 1)[0])
        if f"{location}/{repo}" not in state["repositories"] or project_ != proj:
            raise Fail(f"pushing {image}: name unknown: repository {repo} not found")
        if image not in state["images"]:
            state["images"].append(image)
        print(f"pushed {image}", file=sys.stderr)


def g_run(state, pos, flags, cwd):
    project(state, flags)
    require_api(state, "run.googleapis.com")
    if pos[1] == "deploy" and len(pos) == 3:
        run_deploy(state, pos[2], flags)
        return
    if pos[1] != "services" or len(pos) != 4:
        raise Usage("run: unsupported command")
    verb, name = pos[2], pos[3]
    need(flags, "--region")
    svc = service(state, name, flags)
    if verb == "describe":
        only(flags, "--region", "--format")
        fmt(flags, {
            "status.url": svc["url"],
            "metadata.name": name,
            "metadata.annotations.'run.googleapis.com/invoker-iam-disabled'":
                "true" if svc["invoker_iam_disabled"] else "",
            "spec.template.spec.serviceAccountName": svc["service_account"],
        })
    elif verb in ("add-iam-policy-binding", "remove-iam-policy-binding"):
        only(flags, "--region", "--member", "--role")
        need(flags, "--member", "--role")
        if flags["--role"] != "roles/run.invoker":
            raise Usage("only roles/run.invoker")
        member = flags["--member"]
        if member.startswith("serviceAccount:") and member.split(":", 1)[1] not in all_accounts(state):
            raise Fail(f"INVALID_ARGUMENT: Service account {member} does not exist.")
        if verb == "add-iam-policy-binding":
            if member not in svc["invokers"]:
                iam_changed(state, "add-binding", lambda: svc["invokers"].append(member))
        else:
            if member not in svc["invokers"]:
                raise Fail("Policy binding with the specified principal, role, and condition not found!")
            iam_changed(state, "remove-binding", lambda: svc["invokers"].remove(member))
        print(json.dumps({"bindings": [{"role": "roles/run.invoker", "members": svc["invokers"]}]}))
    elif verb == "get-iam-policy":
        only(flags, "--region", "--flatten", "--filter", "--format")
        if flags.get("--flatten") != "bindings[].members" or flags.get("--filter") != "bindings.role:roles/run.invoker":
            raise Usage("get-iam-policy: unsupported --flatten/--filter")
        fmt(flags, {"bindings.members": svc["invokers"]})
    elif verb == "delete":
        only(flags, "--region")
        if "--quiet" not in flags:
            raise Usage("delete prompts without --quiet")
        del state["services"][name]
    else:
        raise Usage("run services: unsupported command")


def all_accounts(state):
    return state["service_accounts"] + [default_sa(state)]


def run_deploy(state, name, flags):
    only(flags, "--image", "--region", "--allow-unauthenticated", "--no-allow-unauthenticated",
         "--invoker-iam-check", "--no-invoker-iam-check", "--service-account", "--set-env-vars",
         "--startup-probe")
    need(flags, "--image", "--region")
    if "--startup-probe" in flags:
        probe = dict(item.split("=", 1) for item in flags["--startup-probe"].split(","))
        unknown = set(probe) - {"httpGet.path", "httpGet.port", "tcpSocket.port", "initialDelaySeconds",
                                "periodSeconds", "timeoutSeconds", "failureThreshold"}
        if unknown:
            raise Usage(f"--startup-probe: unknown keys {sorted(unknown)}")
        if probe.get("httpGet.path", "").endswith("z"):
            raise Usage("--startup-probe: Cloud Run reserves some paths ending in z")
    if flags["--image"] not in state["images"]:
        raise Fail(f"Image '{flags['--image']}' not found.")
    if "--allow-unauthenticated" in flags and "--no-allow-unauthenticated" in flags:
        raise Usage("both --allow-unauthenticated and --no-allow-unauthenticated")
    svc = state["services"].get(name)
    if svc is not None and svc["region"] != flags["--region"]:
        raise Usage("the fake keeps one region per service")
    if svc is None:
        region_code = "".join(part[0] for part in flags["--region"].split("-")[:2])
        svc = {
            "region": flags["--region"],
            "url": f"https://{name}-abc123xyz-{region_code}.a.run.app",
            "invokers": [],
            "invoker_iam_disabled": False,
            "service_account": default_sa(state),
            "env": {},
        }
        state["services"][name] = svc
    svc["image"] = flags["--image"]
    if "--service-account" in flags:
        account = flags["--service-account"]
        if account not in all_accounts(state):
            raise Fail(f"Service account {account} does not exist.")
        svc["service_account"] = account
    if "--set-env-vars" in flags:
        svc["env"] = dict(item.split("=", 1) for item in flags["--set-env-vars"].split(","))
    if "--invoker-iam-check" in flags:
        iam_changed(state, "invoker-iam-check", lambda: svc.update(invoker_iam_disabled=False))
    if "--no-invoker-iam-check" in flags:
        svc["invoker_iam_disabled"] = True
    if "--allow-unauthenticated" in flags and "allUsers" not in svc["invokers"]:
        iam_changed(state, "allow", lambda: svc["invokers"].append("allUsers"))
    if "--no-allow-unauthenticated" in flags and "allUsers" in svc["invokers"]:
        iam_changed(state, "disallow", lambda: svc["invokers"].remove("allUsers"))
    print(f"Service [{name}] has been deployed.\nService URL: {svc['url']}", file=sys.stderr)


def g_iam(state, pos, flags, cwd):
    proj = project(state, flags)
    if pos[1] != "service-accounts" or len(pos) != 4:
        raise Usage("iam: only service-accounts")
    verb, arg = pos[2], pos[3]
    if verb == "describe":
        only(flags)
        if arg not in state["service_accounts"] or state.get("sa_hidden", 0) > 0:
            if state.get("sa_hidden", 0) > 0:
                state["sa_hidden"] -= 1
            raise Fail(f"NOT_FOUND: Unknown service account {arg}")
        print(f"email: {arg}")
    elif verb == "create":
        only(flags, "--display-name")
        require_api(state, "iam.googleapis.com")
        email = f"{arg}@{proj}.iam.gserviceaccount.com"
        if email in state["service_accounts"]:
            raise Fail(f"ALREADY_EXISTS: Service account {arg} already exists within project")
        state["service_accounts"].append(email)
        state["sa_hidden"] = state["sa_visible_after"]
    elif verb == "delete":
        only(flags)
        if "--quiet" not in flags:
            raise Usage("delete prompts without --quiet")
        if arg not in state["service_accounts"]:
            raise Fail(f"NOT_FOUND: {arg}")
        state["service_accounts"].remove(arg)
    else:
        raise Usage("iam service-accounts: unsupported command")


def g_projects(state, pos, flags, cwd):
    project(state, flags)
    if pos[:2] != ["projects", "describe"] or len(pos) != 3:
        raise Usage("projects: only describe")
    only(flags, "--format")
    fmt(flags, {"projectNumber": state["project_number"]})


GCLOUD = {
    "config": g_config, "auth": g_auth, "services": g_services, "artifacts": g_artifacts,
    "builds": g_builds, "run": g_run, "iam": g_iam, "projects": g_projects,
}


def gcloud(state, argv, cwd):
    try:
        pos, flags = parse(argv)
        if not pos or pos[0] not in GCLOUD:
            raise Usage("unknown command group")
        GCLOUD[pos[0]](state, pos, flags, cwd)
    except (Usage, IndexError) as e:
        print(f"fake gcloud: unsupported: {e}: {argv}", file=sys.stderr)
        return 2
    except Fail as e:
        print(f"ERROR: (gcloud) {e}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# curl


def curl(state, argv, cwd):
    out = None
    write_out = None
    url = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-o", "-w", "--max-time"):
            value = argv[i + 1]
            if arg == "-o":
                out = value
            elif arg == "-w":
                write_out = value
            i += 2
            continue
        if arg == "-sS":
            pass
        elif arg.startswith("-"):
            print(f"fake curl: unsupported option {arg}", file=sys.stderr)
            return 2
        else:
            url = arg
        i += 1
    if not url or not url.startswith("https://"):
        print(f"fake curl: expected an https URL, got {url!r}", file=sys.stderr)
        return 2
    sender = state["services"].get("sending-service")
    if sender is None or url != sender["url"]:
        code, status, body = 6, "000", ""
    elif state["forced_answers"]:
        status, body = state["forced_answers"].pop(0)
        code = 7 if status == "000" else 0
    elif state["stale"] and state["stale"]["remaining"] > 0:
        code, status, body = state["stale"]["answer"]
        state["stale"]["remaining"] -= 1
    else:
        state["stale"] = None
        code, status, body = answer(state)
    if code:
        print(f"curl: ({code}) Could not resolve host: {url}", file=sys.stderr)
    if out:
        with open(os.path.join(cwd, out), "w") as f:
            f.write(body)
    if write_out == "%{http_code}":
        sys.stdout.write(status)
    return code


TOOLS = {"gcloud": gcloud, "curl": curl}


class Fake:
    """One simulated project: runs calls against the state in `files`."""

    def __init__(self, files):
        self.files = files

    def call(self, tool, argv, cwd):
        """Runs one call; returns (exit status, stdout, stderr)."""
        self.files.record(tool, argv, cwd)
        state = self.files.load()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = TOOLS[tool](state, argv, cwd)
        self.files.save(state)
        return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------
# Serving calls through a FIFO

WRAPPER = """#!/bin/bash
# Hands this call to the fake cloud in the test process (see fake_cloud.py).
set -eu
reply="$FAKE_CLOUD_DIR/reply.$$"
mkfifo "$reply"
trap 'rm -f "$reply" "$reply.out" "$reply.err"' EXIT
printf '%s\\0' {tool} "$reply" "$PWD" "$@" > "$FAKE_CLOUD_DIR/calls"
read -r code < "$reply"
cat "$reply.out"
cat "$reply.err" >&2
exit "$code"
"""


def install(bin_dir, fifo_dir):
    """Writes the `gcloud` and `curl` wrappers into bin_dir and makes the FIFO."""
    os.mkfifo(os.path.join(fifo_dir, "calls"))
    for tool in TOOLS:
        path = os.path.join(bin_dir, tool)
        with open(path, "w") as f:
            f.write(WRAPPER.replace("{tool}", tool))
        os.chmod(path, 0o755)


def _open_reader_side(path, deadline):
    """Opens a FIFO for writing once its reader is there, or gives up."""
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno not in (errno.ENXIO, errno.ENOENT) or time.monotonic() > deadline:
                return None
            time.sleep(0.001)


def serve(fake, fifo_dir):
    """Answers calls from the wrappers until stop() is called; returns stop."""
    calls = os.path.join(fifo_dir, "calls")

    def loop():
        while True:
            with open(calls, "rb") as f:
                data = f.read()
            if data == b"stop\0":
                return
            parts = [p.decode() for p in data.split(b"\0")[:-1]]
            if len(parts) < 3:
                continue
            tool, reply, cwd, argv = parts[0], parts[1], parts[2], parts[3:]
            try:
                code, out, err = fake.call(tool, argv, cwd)
            except Exception as e:  # a bug in the fake: fail the call, keep serving
                code, out, err = 3, "", f"fake cloud crashed: {e!r}\n"
            with open(reply + ".out", "w") as f:
                f.write(out)
            with open(reply + ".err", "w") as f:
                f.write(err)
            fd = _open_reader_side(reply, time.monotonic() + 10)
            if fd is not None:
                os.write(fd, f"{code}\n".encode())
                os.close(fd)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop():
        fd = _open_reader_side(calls, time.monotonic() + 1)
        if fd is not None:
            os.write(fd, b"stop\0")
            os.close(fd)
        thread.join(timeout=5)

    return stop


def main():
    tool, argv = sys.argv[1], sys.argv[2:]
    fake = Fake(Files(os.environ["FAKE_CLOUD_STATE"], os.environ["FAKE_CLOUD_LOG"]))
    code, out, err = fake.call(tool, argv, os.getcwd())
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())

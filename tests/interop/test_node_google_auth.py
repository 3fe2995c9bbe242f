"""The metadata emulator against Node's ``google-auth-library`` (the version
pinned in ``node/package.json``): ``getIdTokenClient(url)`` fetches an ID
token from the emulator (``GCE_METADATA_HOST``) and calls the receiver with
it, in both ways the receiver can be protected:

- as the tutorial deploys it, checking nothing itself, behind
  ``cloud-run-ingress`` (Cloud Run's front end): 403 with Cloud Run's page
  until the service's IAM policy grants the emulator's account
  ``roles/run.invoker``, 200 once the policy file is edited, no restart;
- verifying tokens in-app: 200 when its allowlist names the emulator's
  account, 403 when it names another one.

``node/id-token-request.js`` takes the URL and the expected status as
arguments, so the same script calls through either. Without ``node`` or
``node/node_modules`` the tests are skipped (``npm ci`` in
``tests/interop/node``); ``.ci/run`` installs them.
"""

import json
import pathlib
import shutil
import subprocess

import pytest

from binaries import Service, build, client_env, free_port, missing_toolchain

NODE_DIR = pathlib.Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "id-token-request.js"
NUMBER = "123456789012"
EMAIL = f"{NUMBER}-compute@developer.gserviceaccount.com"
OTHER = "calling-service-sa@interop-project.iam.gserviceaccount.com"
HELLO = "Hello from the receiving service!"


@pytest.fixture(scope="module")
def node():
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "google-auth-library").is_dir():
        missing_toolchain(
            "Node's google-auth-library is not installed: "
            "apt-get install nodejs npm, then npm ci in tests/interop/node"
        )
    return node


@pytest.fixture(scope="module")
def binaries():
    emulator = build("metadata-emulator", "metadata-emulator")["metadata-emulator"]
    receiver = build("receiver", "receiver")["receiver"]
    return emulator, receiver


@pytest.fixture(scope="module")
def ingress_binary():
    return build("cloud-run-ingress", "cloud-run-ingress")["cloud-run-ingress"]


@pytest.fixture(scope="module")
def emulator(binaries):
    args = ["--project-id", "interop-project", "--project-number", NUMBER]
    args += ["--email", "default-compute"]
    with Service(binaries[0], args) as emulator:
        yield emulator
        assert emulator.close() == 0


def private_receiver(binary, emulator, allowed):
    """The receiver verifying tokens for its own URL, only ``allowed`` may
    invoke it; ready once it has the emulator's keys."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AUTH_AUDIENCE": url,
        "AUTH_JWKS_URL": emulator.url("/oauth2/v3/certs"),
        "AUTH_ALLOWED_INVOKERS": allowed,
    }
    receiver = Service(binary, env=env, port=port)
    receiver.wait_for("signing keys loaded")
    return receiver


def invoker_policy(member):
    """The service's IAM policy, as ``gcloud run services get-iam-policy
    --format=json`` prints it: ``member`` holds ``roles/run.invoker``."""
    return json.dumps({"bindings": [{"role": "roles/run.invoker", "members": [member]}]})


def call(node, emulator, url, expected):
    result = subprocess.run(
        [node, str(SCRIPT), url, str(expected)],
        cwd=NODE_DIR,
        env=client_env(emulator),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    print(f"google-auth-library -> {url}, expecting {expected}:")
    print(result.stdout)
    got = json.loads(result.stdout)
    assert result.returncode == 0, f"expected {expected}, got {got['status']}: {got['body']}"
    return got


@pytest.mark.parametrize(
    "allowed, status",
    [(EMAIL, 200), (OTHER, 403)],
    ids=["allowed", "another-account-allowed"],
)
def test_id_token_client_calls_a_private_receiver(node, binaries, emulator, allowed, status):
    with private_receiver(binaries[1], emulator, allowed) as receiver:
        url = receiver.url()
        got = call(node, emulator, url, status)
        assert receiver.close() == 0
    assert got["credentials"] == "Compute"
    assert got["projectId"] == "interop-project"
    assert got["email"] == EMAIL
    assert got["universeDomain"] == "googleapis.com"
    assert got["claims"] == {
        "aud": url,
        "email": EMAIL,
        "email_verified": True,
        "iss": "https://accounts.google.com",
    }
    if status == 200:
        assert got["body"] == HELLO
    else:
        assert HELLO not in got["body"]


def test_id_token_client_through_cloud_run_ingress(node, binaries, ingress_binary, emulator, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(invoker_policy(f"serviceAccount:{OTHER}"))
    # The receiver as the tutorial deploys it: no AUTH_* settings.
    with Service(binaries[1]) as receiver:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["--upstream", receiver.url(), "--audience", url, "--policy", str(policy)]
        args += ["--jwks-url", emulator.url("/oauth2/v3/certs")]
        with Service(ingress_binary, args, port=port) as ingress:
            ingress.wait_for("signing keys loaded")
            refused = call(node, emulator, url, 403)
            # gcloud run services add-iam-policy-binding: the file edited in
            # place, taken up without a restart.
            with policy.open("r+") as f:
                f.truncate()
                f.write(invoker_policy(f"serviceAccount:{EMAIL}"))
            ingress.wait_for("IAM policy reloaded")
            allowed = call(node, emulator, url, 200)
            assert ingress.close() == 0
        assert receiver.close() == 0
    assert "<title>403 Forbidden</title>" in refused["body"]
    assert HELLO not in refused["body"]
    assert allowed["body"] == HELLO
    for got in (refused, allowed):
        assert got["credentials"] == "Compute"
        assert got["email"] == EMAIL
        assert got["claims"] == {
            "aud": url,
            "email": EMAIL,
            "email_verified": True,
            "iss": "https://accounts.google.com",
        }

"""The metadata emulator against Google's own Python client library, to show
it speaks Google's formats and not only ours.

- google-auth, pointed at the emulator with ``GCE_METADATA_HOST`` as on
  Cloud Run, finds the "metadata server", fetches an ID token
  (``google.oauth2.id_token.fetch_id_token``) and an access token from it.
- ``google.oauth2.id_token.verify_token`` with ``certs_url`` at the
  emulator's ``/oauth2/v3/certs`` accepts the emulator's token for its
  audience and refuses it for another. Given a JWKS, google-auth verifies
  through PyJWT; ``google.auth.jwt.decode``, google-auth's own verifier, is
  checked as well with the same public keys.

Run: ``python3 -m pytest -q tests/interop`` from the repository root. It
builds the emulator itself with cargo (debug profile, ``CARGO_TARGET_DIR``
honoured) and stops it at the end.
"""

import base64
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt
from google.auth.transport.requests import Request
from google.oauth2 import id_token

ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30
EMAIL = "calling-service-sa@local-project.iam.gserviceaccount.com"
AUDIENCE = "http://127.0.0.1:8081"
IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity"


def build():
    """Builds the emulator binary; its path."""
    cargo = os.environ.get("CARGO", "cargo")
    result = subprocess.run(
        [
            cargo,
            "build",
            "--locked",
            "-p",
            "metadata-emulator",
            "--bin",
            "metadata-emulator",
            "--message-format=json-render-diagnostics",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=1800,
    )
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            if message["target"]["name"] == "metadata-emulator":
                return message["executable"]
    raise AssertionError("cargo built no metadata-emulator binary")


class Emulator:
    """The emulator binary on 127.0.0.1, any free port, with its own new key."""

    def __init__(self, binary):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LOG_FORMAT": "json",
            "RUST_LOG": "info",
        }
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--bind", "127.0.0.1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + STARTUP_SECONDS
        self.addr = None
        # Ready when it logs the address it listens on.
        while self.addr is None:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError("the emulator did not listen in time")
            if line is None:
                raise AssertionError(f"the emulator exited: {self.process.wait()}")
            entry = json.loads(line)
            if entry.get("message") == "listening":
                self.addr = entry["addr"]

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def url(self, path):
        return f"http://{self.addr}{path}"

    def close(self):
        """SIGTERM, as Cloud Run would; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def binary():
    return build()


@pytest.fixture(scope="module")
def emulator(binary):
    emulator = Emulator(binary)
    try:
        yield emulator
    finally:
        assert emulator.close() == 0, "the emulator must exit 0 on SIGTERM"


def session():
    s = requests.Session()
    s.trust_env = False  # loopback only, never through a proxy
    return s


def mint(emulator, audience, fmt="full"):
    response = session().get(
        emulator.url(IDENTITY),
        params={"audience": audience, "format": fmt},
        headers={"Metadata-Flavor": "Google"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Metadata-Flavor"] == "Google"
    return response.text


def public_pems(emulator):
    """``{kid: public key PEM}`` from the emulator's JWKS."""
    jwks = session().get(emulator.url("/oauth2/v3/certs"), timeout=10).json()

    def number(value):
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    pems = {}
    for jwk in jwks["keys"]:
        key = rsa.RSAPublicNumbers(number(jwk["e"]), number(jwk["n"])).public_key()
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        pems[jwk["kid"]] = pem.decode()
    return pems


def test_verify_token_accepts_the_right_audience(emulator):
    token = mint(emulator, AUDIENCE)
    claims = id_token.verify_token(
        token,
        Request(session=session()),
        audience=AUDIENCE,
        certs_url=emulator.url("/oauth2/v3/certs"),
    )
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["email"] == EMAIL
    assert claims["email_verified"] is True
    assert claims["sub"].isdigit() and claims["azp"] == claims["sub"]
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


def test_verify_token_refuses_a_wrong_audience(emulator):
    token = mint(emulator, AUDIENCE)
    with pytest.raises(jwt.InvalidAudienceError):
        id_token.verify_token(
            token,
            Request(session=session()),
            audience="http://127.0.0.1:9999",
            certs_url=emulator.url("/oauth2/v3/certs"),
        )


def test_a_token_from_another_key_is_refused(emulator, binary):
    other = Emulator(binary)
    try:
        token = mint(other, AUDIENCE)
    finally:
        assert other.close() == 0
    with pytest.raises(jwt.PyJWKClientError):
        id_token.verify_token(
            token,
            Request(session=session()),
            audience=AUDIENCE,
            certs_url=emulator.url("/oauth2/v3/certs"),
        )


def test_google_auths_own_verifier_agrees(emulator):
    pems = public_pems(emulator)
    token = mint(emulator, AUDIENCE, fmt="standard")
    claims = google_jwt.decode(token, certs=pems, audience=AUDIENCE)
    assert claims["aud"] == AUDIENCE
    assert "email" not in claims
    with pytest.raises(ValueError):
        google_jwt.decode(token, certs=pems, audience="http://127.0.0.1:9999")


# google-auth reads GCE_METADATA_HOST when it is imported, so the client runs
# in a fresh interpreter with the emulator as its metadata server.
CLIENT = """
import json, sys
from google.auth import compute_engine
from google.auth.transport.requests import Request
from google.oauth2 import id_token
request = Request()
token = id_token.fetch_id_token(request, sys.argv[1])
credentials = compute_engine.Credentials()
credentials.refresh(request)
print(json.dumps({
    "id_token": token,
    "access_token": credentials.token,
    "service_account": credentials.service_account_email,
}))
"""


def test_google_auth_gets_its_tokens_from_the_emulator(emulator):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GCE_METADATA_HOST": emulator.addr,
        "GCE_METADATA_IP": emulator.addr,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, AUDIENCE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["access_token"].startswith("ya29.")
    assert got["service_account"] == EMAIL
    claims = id_token.verify_token(
        got["id_token"],
        Request(session=session()),
        audience=AUDIENCE,
        certs_url=emulator.url("/oauth2/v3/certs"),
    )
    assert claims["email"] == EMAIL

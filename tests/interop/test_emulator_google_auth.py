"""The metadata emulator against Google's own Python client library, to show
it speaks Google's formats and not only ours.

- google-auth, pointed at the emulator with ``GCE_METADATA_HOST`` as on
  Cloud Run, finds the "metadata server", fetches an ID token
  (``google.oauth2.id_token.fetch_id_token``) and an access token from it.
- ``google.auth.default()``, as an app on Cloud Run calls it, finds
  Compute Engine credentials and the emulator's project id, account and
  universe domain (``--project-id``, ``--email default-compute``,
  ``--project-number``).
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
import subprocess
import sys
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from binaries import Service, build, client_env

EMAIL = "calling-service-sa@local-project.iam.gserviceaccount.com"
AUDIENCE = "http://127.0.0.1:8081"
IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity"


def start(binary, *args):
    """The emulator on 127.0.0.1, any free port, with its own new key."""
    return Service(binary, ["--port", "0", *args])


@pytest.fixture(scope="module")
def binary():
    return build("metadata-emulator", "metadata-emulator")["metadata-emulator"]


@pytest.fixture(scope="module")
def emulator(binary):
    emulator = start(binary)
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
    other = start(binary)
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
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, AUDIENCE],
        env=client_env(emulator),
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


# What an app on Cloud Run calls first: Application Default Credentials.
DEFAULT = """
import json
import google.auth
from google.auth.transport.requests import Request
credentials, project_id = google.auth.default()
credentials.refresh(Request())
print(json.dumps({
    "credentials": type(credentials).__module__ + "." + type(credentials).__name__,
    "project_id": project_id,
    "service_account": credentials.service_account_email,
    "universe_domain": credentials.universe_domain,
}))
"""


def test_google_auth_default_finds_compute_engine_credentials(binary, tmp_path):
    number = "123456789012"
    with start(
        binary,
        "--project-id",
        "interop-project",
        "--project-number",
        number,
        "--email",
        "default-compute",
    ) as emulator:
        # An empty home: no gcloud credentials file can win over the emulator.
        result = subprocess.run(
            [sys.executable, "-c", DEFAULT],
            env=client_env(emulator, HOME=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert emulator.close() == 0
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    print("google.auth.default() against the emulator:", json.dumps(got))
    assert got == {
        "credentials": "google.auth.compute_engine.credentials.Credentials",
        "project_id": "interop-project",
        "service_account": f"{number}-compute@developer.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    }

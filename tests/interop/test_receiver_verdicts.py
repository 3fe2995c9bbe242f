"""The receiver's token verdicts, checked against a reference no one here
wrote: google-auth's ``google.oauth2.id_token.verify_token``.

The Rust example ``token-set`` mints the receiver's token set (fresh test
keys, every rule of in-app verification). This test serves the public keys
on 127.0.0.1 both as a JWKS (for the receiver) and as ``{kid: PEM
certificate}`` (the format of Google's ``oauth2/v1/certs``, which google-auth
verifies itself, honouring ``clock_skew_in_seconds``; given a JWKS it would
hand over to PyJWT, which ignores the skew and does not require ``exp``).
It runs the real receiver binary against the JWKS, sends it every token, and
fails on any verdict that differs from google-auth's, after adding the
checks google-auth does not make: ``iss``, ``nbf``, a ``kid`` in the header
(without one google-auth tries every certificate), and the allowlist with
``email_verified``. Where google-auth is knowingly different, the token set
says why, and the test checks that the difference is still the one stated.

Run: ``python3 -m pytest -q tests/interop`` from the repository root. It
builds the receiver and the example itself with cargo (debug profile,
``CARGO_TARGET_DIR`` honoured).
"""

import base64
import datetime
import http.server
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import id_token

import binaries

LEEWAY = 60
STARTUP_SECONDS = 30


def build():
    """Builds the receiver binary and the token-set example; their paths."""
    paths = binaries.build("receiver", "receiver", examples=("token-set",))
    return paths["receiver"], paths["token-set"]


def b64url_int(value):
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def certs_document(jwks):
    """``{kid: PEM certificate}`` for each JWK, as Google's v1 certs serves.
    The certificates are issued by a throwaway key: google-auth only takes
    the public key out of them."""
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    certs = {}
    for jwk in jwks["keys"]:
        public_key = rsa.RSAPublicNumbers(b64url_int(jwk["e"]), b64url_int(jwk["n"])).public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, jwk["kid"])]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(issuer_key, hashes.SHA256())
        )
        certs[jwk["kid"]] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return certs


class KeyServer:
    """Serves ``/jwks`` and ``/certs`` on 127.0.0.1 from a thread."""

    def __init__(self, jwks, certs):
        documents = {"/jwks": json.dumps(jwks).encode(), "/certs": json.dumps(certs).encode()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = documents.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Receiver:
    """The receiver binary, verifying with the token set's settings."""

    def __init__(self, binary, token_set, jwks_url):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BIND_ADDR": "127.0.0.1",
            "PORT": "0",
            "LOG_FORMAT": "json",
            "RUST_LOG": "info",
            "AUTH_AUDIENCE": ",".join(token_set["audiences"]),
            "AUTH_ISSUERS": ",".join(token_set["issuers"]),
            "AUTH_ALLOWED_INVOKERS": ",".join(token_set["allowed_invokers"]),
            "AUTH_JWKS_URL": jwks_url,
        }
        self.process = subprocess.Popen(
            [binary], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.addr = None
        keys_loaded = False
        deadline = time.monotonic() + STARTUP_SECONDS
        # Ready when it listens and holds the keys: both are log lines.
        while self.addr is None or not keys_loaded:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError("the receiver did not listen and load keys in time")
            if line is None:
                raise AssertionError(f"the receiver exited: {self.process.wait()}")
            entry = json.loads(line)
            if entry.get("message") == "listening":
                self.addr = entry["addr"]
            elif entry.get("message") == "signing keys loaded":
                keys_loaded = True

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def close(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    receiver_bin, token_set_bin = build()
    out = tmp_path_factory.mktemp("token-set")
    subprocess.run([token_set_bin, str(out)], check=True, timeout=120, stdout=subprocess.DEVNULL)
    token_set = json.loads((out / "token-set.json").read_text())
    keys = KeyServer(token_set["jwks"], certs_document(token_set["jwks"]))
    receiver = Receiver(receiver_bin, token_set, keys.url("/jwks"))
    try:
        yield token_set, keys, receiver
    finally:
        receiver.close()
        keys.close()


def session():
    s = requests.Session()
    s.trust_env = False  # loopback only, never through a proxy
    return s


def segment(token, index):
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reference_status(token, token_set, certs_url, http):
    """google-auth's verdict, with the checks it leaves out added: 200, 401
    or 403."""
    try:
        payload = id_token.verify_token(
            token,
            Request(session=http),
            audience=token_set["audiences"],
            certs_url=certs_url,
            clock_skew_in_seconds=LEEWAY,
        )
    except google_exceptions.TransportError:
        raise
    except (google_exceptions.GoogleAuthError, ValueError, TypeError):
        # TypeError: google-auth does arithmetic on whatever exp and iat hold.
        return 401
    now = int(time.time())
    if "kid" not in segment(token, 0):
        return 401
    if payload.get("iss") not in token_set["issuers"]:
        return 401
    if "nbf" in payload:
        nbf = payload["nbf"]
        if not is_number(nbf) or nbf - LEEWAY > now:
            return 401
    email = payload.get("email")
    allowed = {e.lower() for e in token_set["allowed_invokers"]}
    if payload.get("email_verified") is not True or not isinstance(email, str):
        return 403
    if email.lower() not in allowed:
        return 403
    return 200


def verdicts(setup):
    token_set, keys, receiver = setup
    http = session()
    rows = []
    for case in token_set["cases"]:
        response = http.get(
            f"http://{receiver.addr}/",
            headers={"Authorization": f"Bearer {case['token']}"},
            timeout=10,
        )
        reference = reference_status(case["token"], token_set, keys.url("/certs"), http)
        rows.append((case, response.status_code, reference))
    return rows


def test_google_auth_accepts_the_valid_token(setup):
    token_set, keys, _ = setup
    valid = next(c for c in token_set["cases"] if c["name"] == "valid")
    payload = id_token.verify_token(
        valid["token"],
        Request(session=session()),
        audience=token_set["audiences"],
        certs_url=keys.url("/certs"),
        clock_skew_in_seconds=LEEWAY,
    )
    assert payload["email"] == token_set["allowed_invokers"][0]


def test_the_receiver_agrees_with_google_auth(setup):
    rows = verdicts(setup)
    assert len(rows) >= 40
    problems = []
    for case, receiver, reference in rows:
        if receiver != case["status"]:
            problems.append(f"{case['name']}: receiver {receiver}, its own test expects {case['status']}")
        if case["google_auth_differs"]:
            if receiver == reference:
                problems.append(
                    f"{case['name']}: listed as a difference, but both answer {receiver}"
                )
        elif receiver != reference:
            problems.append(f"{case['name']}: receiver {receiver}, google-auth {reference}")
    assert not problems, "\n".join(problems)
    # Both sides of the comparison saw every kind of verdict.
    assert {r for _, r, _ in rows} == {200, 401, 403}
    assert {r for _, _, r in rows} == {200, 401, 403}


def test_known_differences_are_stated(setup):
    token_set, _, _ = setup
    differing = [c for c in token_set["cases"] if c["google_auth_differs"]]
    assert [c["name"] for c in differing] == ["aud_array_holding_ours"]
    for case in differing:
        assert case["status"] == 200
        assert "aud" in case["google_auth_differs"]

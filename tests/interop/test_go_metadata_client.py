"""The metadata emulator against Go's metadata client,
``cloud.google.com/go/compute/metadata`` (Debian's
``golang-google-cloud-compute-metadata-dev``): ``OnGCE``, ``ProjectID``,
``NumericProjectID``, ``Zone``, ``InstanceID``, ``Email("")`` and
``Get("instance/region")``, pointed at the emulator with
``GCE_METADATA_HOST`` as an app on Cloud Run would be at the real server.

The program is built offline in GOPATH mode against the Debian source tree
(``/usr/share/gocode``, or a ``GOPATH`` entry holding the package), so no
module download happens. Without ``go`` or the package the test is skipped
(``apt-get install golang-go golang-google-cloud-compute-metadata-dev``);
``.ci/run`` installs both.
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import requests

from binaries import Service, build, client_env, missing_toolchain

PROGRAM = pathlib.Path(__file__).resolve().parent / "go" / "metadata-client"
PACKAGE = "src/cloud.google.com/go/compute/metadata"
NUMBER = "123456789012"
EMAIL = f"{NUMBER}-compute@developer.gserviceaccount.com"


def gopath():
    """The GOPATH entry holding the metadata package, or ``None``."""
    entries = [e for e in os.environ.get("GOPATH", "").split(os.pathsep) if e]
    for entry in entries + ["/usr/share/gocode"]:
        if (pathlib.Path(entry) / PACKAGE / "metadata.go").is_file():
            return entry
    return None


@pytest.fixture(scope="module")
def go_client(tmp_path_factory):
    """The Go program, built; its path."""
    go = shutil.which("go")
    path = gopath()
    if go is None or path is None:
        missing_toolchain(
            "Go's metadata client is not installed: apt-get install golang-go "
            "golang-google-cloud-compute-metadata-dev"
        )
    out = tmp_path_factory.mktemp("go") / "metadata-client"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(out.parent),
        "GOCACHE": os.environ.get("GOCACHE") or str(tmp_path_factory.getbasetemp() / "gocache"),
        "GOPATH": path,
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    subprocess.run([go, "build", "-o", str(out), "."], cwd=PROGRAM, env=env, check=True, timeout=600)
    return str(out)


@pytest.fixture(scope="module")
def emulator():
    binary = build("metadata-emulator", "metadata-emulator")["metadata-emulator"]
    args = ["--project-id", "interop-project", "--project-number", NUMBER]
    args += ["--region", "europe-west1", "--email", "default-compute"]
    with Service(binary, args) as emulator:
        yield emulator
        assert emulator.close() == 0


def test_go_metadata_client_reads_what_cloud_run_serves(go_client, emulator):
    result = subprocess.run(
        [go_client],
        env=client_env(emulator),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    print("Go's cloud.google.com/go/compute/metadata against the emulator:")
    print(result.stdout)
    got = json.loads(result.stdout)
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy
    instance_id = session.get(
        emulator.url("/computeMetadata/v1/instance/id"),
        headers={"Metadata-Flavor": "Google"},
        timeout=10,
    ).text
    assert instance_id.isdigit()
    assert got == {
        "OnGCE": True,
        "ProjectID": "interop-project",
        "NumericProjectID": NUMBER,
        "Zone": "europe-west1-1",
        "InstanceID": instance_id,
        "Email": EMAIL,
        'Get("instance/region")': f"projects/{NUMBER}/regions/europe-west1",
        'Get("instance/zone")': f"projects/{NUMBER}/zones/europe-west1-1",
    }

"""Runs deploy/cloud-run.sh against the fake gcloud and curl in fake_cloud.py.

Each test gets a copy of the script and Cloud Build config in a temporary
repository (with stand-in Dockerfiles), a bin directory whose `gcloud`, `curl`
and `sleep` are fakes, and a clean environment: nothing from the caller's
environment (PROJECT_ID, REGION, a real gcloud) reaches the script.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import fake_cloud  # noqa: E402


class Cloud:
    def __init__(self, tmp_path):
        self.root = tmp_path / "repo"
        (self.root / "deploy").mkdir(parents=True)
        for name in ("cloud-run.sh", "cloudbuild.yaml"):
            shutil.copy2(REPO / "deploy" / name, self.root / "deploy" / name)
        for service in ("receiver", "sender"):
            (self.root / f"Dockerfile.{service}").write_text("FROM scratch\n")
        self.script = self.root / "deploy" / "cloud-run.sh"
        self.elsewhere = tmp_path  # the script is run from outside the repository

        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fifo_dir = tmp_path / "fifo"
        fifo_dir.mkdir()
        fake_cloud.install(str(self.bin), str(fifo_dir))
        # Records the wait instead of waiting.
        sleep = self.bin / "sleep"
        sleep.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$FAKE_SLEEP_LOG"\n')
        sleep.chmod(0o755)

        self.state_file = tmp_path / "state.json"
        self.log_file = tmp_path / "calls.jsonl"
        self.sleep_log = tmp_path / "sleeps.txt"
        self.log_file.touch()
        self.sleep_log.touch()
        self.state = fake_cloud.default_state()
        self.fake = fake_cloud.Fake(fake_cloud.Files(str(self.state_file), str(self.log_file)))
        self.stop = fake_cloud.serve(self.fake, str(fifo_dir))
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "FAKE_CLOUD_DIR": str(fifo_dir),
            "FAKE_SLEEP_LOG": str(self.sleep_log),
        }

    def run(self, *args, env=None, input="", check=None):
        """Runs the script; check=True/False asserts its success or failure."""
        self.state_file.write_text(json.dumps(self.state))
        self.log_file.write_text("")
        self.sleep_log.write_text("")
        proc = subprocess.run(
            ["bash", str(self.script), *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            cwd=self.elsewhere,
            timeout=60,
        )
        self.state = json.loads(self.state_file.read_text())
        if check is True:
            assert proc.returncode == 0, proc.stderr
        elif check is False:
            assert proc.returncode != 0, proc.stderr
        return proc

    def calls(self, tool="gcloud"):
        lines = self.log_file.read_text().splitlines()
        return [entry["argv"] for entry in map(json.loads, lines) if entry["tool"] == tool]

    def commands(self, tool="gcloud"):
        """The recorded calls as shell command lines."""
        return [shlex.join([tool, *argv]) for argv in self.calls(tool)]

    def sleeps(self):
        return self.sleep_log.read_text().split()

    def ready(self):
        """State after setup and build: APIs on, repository and images there."""
        self.run("setup", check=True)
        self.run("build", "all", check=True)


@pytest.fixture
def cloud(tmp_path):
    cloud = Cloud(tmp_path)
    yield cloud
    cloud.stop()

"""The workspace's binaries for the interop tests: built once with cargo
(debug profile, ``--locked``; cargo honours ``CARGO_TARGET_DIR`` itself),
then run on 127.0.0.1 with JSON logs, ready once they log ``listening``, and
stopped with SIGTERM as Cloud Run stops a container.
"""

import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30


def build(package, *bins, examples=()):
    """Builds ``bins`` (and ``examples``) of ``package``; ``{name: path}``."""
    cargo = os.environ.get("CARGO", "cargo")
    args = [cargo, "build", "--locked", "-p", package]
    for name in bins:
        args += ["--bin", name]
    for name in examples:
        args += ["--example", name]
    result = subprocess.run(
        args + ["--message-format=json-render-diagnostics"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=1800,
    )
    paths = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            paths[message["target"]["name"]] = message["executable"]
    missing = [name for name in (*bins, *examples) if name not in paths]
    assert not missing, f"cargo built no {missing}"
    return paths


def free_port():
    """A port that was free a moment ago, for a service that must know its
    own URL before it starts (its token audience)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A binary on 127.0.0.1 with JSON logs, ready once it logs
    ``listening``; ``addr`` is the address it logged."""

    def __init__(self, binary, args=(), env=None, port=0):
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LOG_FORMAT": "json",
            "RUST_LOG": "info",
            "BIND_ADDR": "127.0.0.1",
            "PORT": str(port),
            "SHUTDOWN_GRACE": "2s",
        }
        full_env.update(env or {})
        self.name = pathlib.Path(binary).name
        self.process = subprocess.Popen(
            [binary, *args],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log = []
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        entry = self.wait_for("listening")
        self.addr = entry["addr"]

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, message):
        """The first log entry with this ``message``, waiting for it."""
        for entry in self.log:
            if entry.get("message") == message:
                return entry
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError(f"{self.name} did not log {message!r} in time: {self.log}")
            if line is None:
                raise AssertionError(f"{self.name} exited ({self.process.wait()}): {self.log}")
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"message": line.rstrip()}
            self.log.append(entry)
            if entry.get("message") == message:
                return entry

    def url(self, path=""):
        return f"http://{self.addr}{path}"

    def close(self):
        """SIGTERM; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def client_env(emulator, **extra):
    """The environment a Google client library gets: the emulator as its
    metadata server, as ``GCE_METADATA_HOST`` points it on a laptop, and no
    proxy between them."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GCE_METADATA_HOST": emulator.addr,
        "GCE_METADATA_IP": emulator.addr,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


def missing_toolchain(reason):
    """Skips the calling test: a machine without a client's toolchain runs
    the rest. Where ``INTEROP_REQUIRE_CLIENTS`` is set (``.ci/run`` sets it
    after installing them), a missing toolchain fails instead, so CI never
    passes by skipping."""
    if os.environ.get("INTEROP_REQUIRE_CLIENTS"):
        pytest.fail(f"{reason} (INTEROP_REQUIRE_CLIENTS is set)", pytrace=False)
    pytest.skip(reason)

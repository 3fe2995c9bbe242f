"""The Dockerfile.* at the repository root: one per workspace binary, all
built the same way (bookworm builder with cache mounts, distroless cc
:nonroot, exec-form ENTRYPOINT), and hadolint clean."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

# Binaries that listen on 127.0.0.1 unless told otherwise (they hand out or
# guard tokens); in a container they must listen on every interface, or
# nothing outside it reaches them. The services default to 0.0.0.0 already.
LOOPBACK_BY_DEFAULT = {"metadata-emulator", "cloud-run-ingress"}


def members():
    manifest = (REPO / "Cargo.toml").read_text()
    return re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[([^\]]*)\]", manifest).group(1))


def binaries():
    """Workspace members that build a binary (a src/main.rs)."""
    return sorted(m for m in members() if (REPO / m / "src" / "main.rs").is_file())


def dockerfiles():
    return sorted(p.name.removeprefix("Dockerfile.") for p in REPO.glob("Dockerfile.*"))


def instructions(name):
    """The Dockerfile's instructions, continuation lines joined, comments out."""
    text = (REPO / f"Dockerfile.{name}").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def test_every_binary_has_a_dockerfile_and_every_dockerfile_a_binary():
    assert binaries(), "no workspace member with a src/main.rs"
    assert dockerfiles() == binaries()


@pytest.mark.parametrize("name", dockerfiles())
def test_dockerfile_follows_the_common_pattern(name):
    found = instructions(name)
    assert (REPO / f"Dockerfile.{name}").read_text().startswith("# syntax=docker/dockerfile:1\n")
    froms = [i for i in found if i.startswith("FROM ")]
    assert len(froms) == 2, froms
    assert re.fullmatch(r"FROM rust:[0-9.]+-bookworm AS build", froms[0]), froms[0]
    # A static binary (glibc linked in) on distroless static: about 7 MB.
    assert froms[1] == "FROM gcr.io/distroless/static-debian12:nonroot"
    (run,) = [i for i in found if i.startswith("RUN ")]
    assert "--mount=type=cache,target=/usr/local/cargo/registry" in run
    assert "--mount=type=cache,target=/src/target" in run
    assert 'RUSTFLAGS="-C target-feature=+crt-static"' in run
    assert f'cargo build --release --locked --target "$target" -p {name}' in run
    assert f'cp "target/$target/release/{name}" /{name}' in run
    assert f"COPY --from=build /{name} /{name}" in found
    assert f'ENTRYPOINT ["/{name}"]' in found, "exec form, the binary itself"
    assert found[-1].startswith("ENTRYPOINT"), "ENTRYPOINT last"
    assert not [i for i in found if i.startswith("USER ")], "distroless :nonroot's user"
    if name in LOOPBACK_BY_DEFAULT:
        assert "ENV BIND_ADDR=0.0.0.0" in found


def test_the_build_context_leaves_out_the_dockerfiles_but_not_the_crates():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "Dockerfile.*" in patterns
    # Every crate builds from the context: no member directory is left out.
    assert not set(members()) & {p.rstrip("/") for p in patterns}


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_clean():
    paths = [str(REPO / f"Dockerfile.{name}") for name in dockerfiles()]
    assert paths
    proc = subprocess.run(["hadolint", *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""Service-account key files stay out of commits (.gitignore), Cloud Build
uploads (.gcloudignore) and Docker build contexts (.dockerignore)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

# The names the README and deploy scripts give key files, and the usual
# `gcloud iam service-accounts keys create NAME-key.json` habit.
KEY_PATTERNS = ["key.json", "*-key.json", "*_key.json", "application_default_credentials.json"]

KEY_FILES = ["key.json", "sender-key.json", "sa-key.json", "calling-service-sa-key.json", "sa_key.json",
             "application_default_credentials.json", "deploy/key.json", "sender/sender-key.json",
             "a/b/c/sa-key.json"]
NOT_KEYS = ["Cargo.toml", "keys.json", "monkey.json.txt", "sender/src/keys.rs",
            "metadata-emulator/tests/keys/test-key-1.pkcs8.pem"]


def patterns(name):
    return [line.strip() for line in (REPO / name).read_text().splitlines()]


@pytest.mark.parametrize("name", [".gitignore", ".gcloudignore"])
def test_gitignore_syntax_files_name_every_key_pattern(name):
    missing = [p for p in KEY_PATTERNS if p not in patterns(name)]
    assert not missing, f"{name} lacks {missing}"


def test_dockerignore_names_every_key_pattern_at_any_depth():
    # Docker matches a pattern against the path from the context root, so a
    # bare `key.json` would leave out only the top-level one.
    missing = [p for p in KEY_PATTERNS if f"**/{p}" not in patterns(".dockerignore")]
    assert not missing, f".dockerignore lacks **/ forms of {missing}"


def test_gcloudignore_still_includes_gitignore():
    assert "#!include:.gitignore" in patterns(".gcloudignore")


def check_ignore(workdir, paths):
    """The subset of paths git's matcher ignores in workdir."""
    proc = subprocess.run(["git", "-C", str(workdir), "check-ignore", "--no-index", "--stdin"],
                          input="\n".join(paths) + "\n", capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return set(proc.stdout.split())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_ignores_key_files_anywhere_and_nothing_else(tmp_path):
    # A copy of .gitignore in a fresh repository, so the test does not depend
    # on this checkout's own state (a worktree, a global excludes file).
    work = tmp_path / "repo"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    shutil.copy(REPO / ".gitignore", work / ".gitignore")
    assert check_ignore(work, KEY_FILES + NOT_KEYS) == set(KEY_FILES)

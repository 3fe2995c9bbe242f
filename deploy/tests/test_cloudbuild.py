"""deploy/cloudbuild.yaml, .gcloudignore and shellcheck, checked without Google Cloud."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
CONFIG = REPO / "deploy" / "cloudbuild.yaml"
SERVICES = ["receiver", "sender"]


def load():
    return yaml.safe_load(CONFIG.read_text())


def substitute(text, values):
    return re.sub(r"\$\{(_[A-Z0-9_]+)\}|\$(PROJECT_ID)\b", lambda m: values[m.group(1) or m.group(2)], text)


def values_for(service):
    return {**load()["substitutions"], "_SERVICE": service, "PROJECT_ID": "demo-project"}


def build_step():
    (step,) = [s for s in load()["steps"] if s["args"][0] == "build"]
    return step


def arg_after(args, option):
    assert args.count(option) == 1, f"{option} once in {args}"
    return args[args.index(option) + 1]


def test_one_docker_build_step_with_buildkit():
    step = build_step()
    assert step["name"] == "gcr.io/cloud-builders/docker"
    assert "DOCKER_BUILDKIT=1" in step["env"]
    assert step["args"][-1] == "."


@pytest.mark.parametrize("service", SERVICES)
def test_build_step_picks_the_services_dockerfile(service):
    args = [substitute(a, values_for(service)) for a in build_step()["args"]]
    assert arg_after(args, "-f") == f"Dockerfile.{service}"


def test_the_dockerfiles_it_names_are_at_the_repository_root():
    present = sorted(p.name for p in REPO.glob("Dockerfile.*"))
    if not present:
        pytest.skip("no Dockerfile.* at the repository root yet")
    named = [substitute(arg_after(build_step()["args"], "-f"), values_for(s)) for s in SERVICES]
    assert set(named) <= set(present), f"cloudbuild.yaml builds {named}, the repository has {present}"


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_in_artifact_registry_and_pushed(service):
    values = values_for(service)
    tag = substitute(arg_after(build_step()["args"], "-t"), values)
    assert tag == f"us-central1-docker.pkg.dev/demo-project/cloud-run-auth/{service}:latest"
    assert [substitute(i, values) for i in load()["images"]] == [tag]
    assert "gcr.io" not in tag


def test_every_substitution_is_declared_used_and_well_formed():
    config = load()
    text = CONFIG.read_text()
    declared = set(config["substitutions"])
    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", text))
    assert declared == used == {"_SERVICE", "_REGION", "_REPOSITORY", "_TAG"}
    assert all(re.fullmatch(r"_[A-Z0-9_]+", key) for key in declared)
    assert "substitution_option" not in str(config.get("options", {}))


def test_script_passes_exactly_the_declared_substitutions():
    script = (REPO / "deploy" / "cloud-run.sh").read_text()
    (line,) = re.findall(r'--substitutions="([^"]+)"', script)
    passed = {item.split("=", 1)[0] for item in line.split(",")}
    assert passed == set(load()["substitutions"])


def test_timeout_allows_a_slow_release_build():
    assert int(load()["timeout"].rstrip("s")) >= 1200


# --- .gcloudignore ------------------------------------------------------------


def ignored(tmp_path, paths):
    """Which of paths .gcloudignore leaves out, judged by git's .gitignore matcher
    (gcloud uses the same syntax), with #!include:.gitignore expanded."""
    lines = []
    for line in (REPO / ".gcloudignore").read_text().splitlines():
        if line.strip() == "#!include:.gitignore":
            gitignore = REPO / ".gitignore"
            lines += gitignore.read_text().splitlines() if gitignore.exists() else []
        else:
            lines.append(line)
    work = tmp_path / "upload"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / ".gitignore").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["git", "-C", str(work), "check-ignore", "--no-index", "--stdin"],
                          input="\n".join(paths) + "\n", capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return set(proc.stdout.split())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gcloudignore_uploads_the_build_inputs_only(tmp_path):
    kept = ["Cargo.toml", "Cargo.lock", "Dockerfile.receiver", "Dockerfile.sender", ".dockerignore",
            "cloud-run/Cargo.toml", "cloud-run/src/lib.rs", "receiver/src/main.rs", "sender/src/lib.rs",
            "sender/tests/relay/main.rs", "metadata-emulator/src/main.rs", "cloud-run-ingress/src/lib.rs",
            "README.md"]
    kept += sorted(p.name for p in REPO.glob("Dockerfile.*"))
    left_out = [".git/HEAD", "target/release/sender", "cloud-run/target/debug/x", "bench/results.txt",
                ".ci/run", "deploy/cloud-run.sh", "tests/interop/test_tutorial.py", "deploy/tests/__pycache__/x.pyc", ".gcloudignore",
                ".gitignore"]
    result = ignored(tmp_path, kept + left_out)
    assert result & set(kept) == set()
    assert result == set(left_out)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gcloudignore_keeps_every_workspace_member(tmp_path):
    manifest = (REPO / "Cargo.toml").read_text()
    members = re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[([^\]]*)\]", manifest).group(1))
    assert members
    assert ignored(tmp_path, [f"{m}/Cargo.toml" for m in members]) == set()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gcloudignore_leaves_out_key_files(tmp_path):
    keys = ["key.json", "sender-key.json", "sa-key.json", "sender/sa_key.json", "receiver/src/key.json",
            "application_default_credentials.json"]
    assert ignored(tmp_path, keys + ["Cargo.toml", "sender/src/keys.rs"]) == set(keys)


def test_gcloudignore_includes_gitignore():
    assert "#!include:.gitignore" in (REPO / ".gcloudignore").read_text().splitlines()


# --- shellcheck ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    scripts = sorted(REPO.glob("deploy/**/*.sh"))
    assert scripts
    proc = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout

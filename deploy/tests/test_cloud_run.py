"""deploy/cloud-run.sh against the fake gcloud and curl (see conftest.py)."""

import json
import os
import shlex
import shutil

import pytest


PROJECT = "demo-project"
REGION = "us-central1"
REGISTRY = f"{REGION}-docker.pkg.dev/{PROJECT}/cloud-run-auth"
SA = f"calling-service-sa@{PROJECT}.iam.gserviceaccount.com"
# Cloud Run sends traffic once GET /ready answers 200 (HTTP/1, not a path
# ending in z).
PROBE = "--startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60"
DEFAULT_SA = "123456789012-compute@developer.gserviceaccount.com"
RECEIVER_URL = "https://receiving-service-abc123xyz-uc.a.run.app"
HELLO = "Response from receiving service: Hello from the receiving service!"

# What `cloud-run.sh tutorial` runs on a fresh project, in order.
TUTORIAL = [
    "gcloud config get-value project",
    "gcloud config get-value run/region",
    # 0: setup, build, no grant left from an earlier run
    "gcloud auth list --filter=status:ACTIVE '--format=value(account)'",
    "gcloud services enable run.googleapis.com cloudbuild.googleapis.com iamcredentials.googleapis.com"
    " artifactregistry.googleapis.com iam.googleapis.com --project demo-project",
    "gcloud artifacts repositories describe cloud-run-auth --location us-central1 --project demo-project",
    "gcloud artifacts repositories create cloud-run-auth --repository-format=docker --location us-central1"
    " --description 'Images for the Cloud Run service-to-service tutorial' --project demo-project",
    "gcloud builds submit --config deploy/cloudbuild.yaml"
    " --substitutions=_SERVICE=receiver,_REGION=us-central1,_REPOSITORY=cloud-run-auth,_TAG=latest"
    " . --project demo-project",
    "gcloud builds submit --config deploy/cloudbuild.yaml"
    " --substitutions=_SERVICE=sender,_REGION=us-central1,_REPOSITORY=cloud-run-auth,_TAG=latest"
    " . --project demo-project",
    "gcloud run services get-iam-policy receiving-service --region us-central1"
    " '--flatten=bindings[].members' --filter=bindings.role:roles/run.invoker"
    " '--format=value(bindings.members)' --project demo-project",
    # 1: both public, no token
    f"gcloud run deploy receiving-service --image {REGISTRY}/receiver:latest --region us-central1"
    " --allow-unauthenticated --startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60 --project demo-project",
    "gcloud run services describe receiving-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    "gcloud run services describe sending-service --region us-central1"
    " '--format=value(spec.template.spec.serviceAccountName)' --project demo-project",
    f"gcloud run deploy sending-service --image {REGISTRY}/sender:latest --region us-central1"
    f" --allow-unauthenticated --startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60 --set-env-vars RECEIVING_SERVICE_URL={RECEIVER_URL},ID_TOKEN_SOURCE=none"
    " --project demo-project",
    "gcloud run services describe sending-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    # 2: receiver private
    "gcloud run services describe receiving-service --region us-central1"
    " '--format=value(metadata.annotations.'\"'\"'run.googleapis.com/invoker-iam-disabled'\"'\"')'"
    " --project demo-project",
    f"gcloud run deploy receiving-service --image {REGISTRY}/receiver:latest --region us-central1"
    " --no-allow-unauthenticated --startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60 --project demo-project",
    "gcloud run services describe sending-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    # 3: ID token as the default compute account
    "gcloud run services describe receiving-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    "gcloud run services describe sending-service --region us-central1"
    " '--format=value(spec.template.spec.serviceAccountName)' --project demo-project",
    f"gcloud run deploy sending-service --image {REGISTRY}/sender:latest --region us-central1"
    f" --allow-unauthenticated --startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60 --set-env-vars RECEIVING_SERVICE_URL={RECEIVER_URL},ID_TOKEN_SOURCE=metadata"
    " --project demo-project",
    "gcloud run services describe sending-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    # 4: as calling-service-sa
    f"gcloud iam service-accounts describe {SA} --project demo-project",
    "gcloud iam service-accounts create calling-service-sa --display-name 'Calling Service Account'"
    " --project demo-project",
    f"gcloud iam service-accounts describe {SA} --project demo-project",
    "gcloud run services describe receiving-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    f"gcloud run deploy sending-service --image {REGISTRY}/sender:latest --region us-central1"
    f" --allow-unauthenticated --startup-probe=httpGet.path=/ready,periodSeconds=1,timeoutSeconds=1,failureThreshold=60 --set-env-vars RECEIVING_SERVICE_URL={RECEIVER_URL},ID_TOKEN_SOURCE=metadata"
    f" --service-account {SA} --project demo-project",
    "gcloud run services describe sending-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
    # 5: grant
    "gcloud run services add-iam-policy-binding receiving-service --region us-central1"
    f" --member=serviceAccount:{SA} --role=roles/run.invoker --project demo-project",
    "gcloud run services describe sending-service --region us-central1 '--format=value(status.url)'"
    " --project demo-project",
]


def printed(stderr, tool="gcloud"):
    """The commands the script announced with '+ tool ...', as argument lists."""
    return [shlex.split(line[2:])[1:] for line in stderr.splitlines() if line.startswith(f"+ {tool} ")]


def flag(argv, name):
    """The value of --name VALUE or --name=VALUE in argv."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def deploys(cloud, service):
    return [argv for argv in cloud.calls() if argv[:3] == ["run", "deploy", service]]


def everything(cloud):
    return " ".join(" ".join(argv) for argv in cloud.calls())


def ready_with_services(cloud):
    cloud.ready()
    cloud.run("deploy-receiver", check=True)
    cloud.run("deploy-sender", "--no-token", check=True)


# --- help, usage, prerequisites ---------------------------------------------


def test_help_lists_every_command_and_setting(cloud):
    proc = cloud.run("--help", check=True)
    for word in ["setup", "build receiver|sender|all", "deploy-receiver [--private]", "create-sa",
                 "deploy-sender [--no-token] [--service-account NAME]", "grant", "check",
                 "tutorial", "teardown [--yes]", "PROJECT_ID", "REGION", "AR_REPOSITORY",
                 "IMAGE_TAG", "IAM_RETRIES", "IAM_WAIT_SECONDS",
                 "iam.automaticIamGrantsForDefaultServiceAccounts"]:
        assert word in proc.stdout
    assert cloud.calls() == []
    assert cloud.run("build", "--help", check=True).stdout == proc.stdout


def test_usage_errors_exit_2(cloud):
    assert cloud.run().returncode == 2
    assert "unknown command 'deploy'" in cloud.run("deploy").stderr
    assert cloud.run("build").returncode == 2
    assert cloud.run("build", "web").returncode == 2
    assert cloud.run("deploy-receiver", "--public").returncode == 2
    assert cloud.run("setup", "now").returncode == 2


def test_without_gcloud_a_clear_error_naming_it(cloud, tmp_path):
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for tool in ["bash", "dirname", "cat", "mktemp", "rm", "grep"]:
        os.symlink(shutil.which(tool), bare / tool)
    for command in ["setup", "tutorial", "check"]:
        proc = cloud.run(command, env={"PATH": str(bare)}, check=False)
        assert proc.returncode == 1
        assert "gcloud (the Google Cloud CLI) is not installed" in proc.stderr
        assert "https://cloud.google.com/sdk/docs/install" in proc.stderr


def test_setup_when_not_logged_in(cloud):
    cloud.state["account"] = ""
    proc = cloud.run("setup", check=False)
    assert "gcloud is not logged in: run 'gcloud auth login'" in proc.stderr
    assert not any(argv[:2] == ["services", "enable"] for argv in cloud.calls())


def test_project_and_region_from_gcloud_config(cloud):
    cloud.state["config"]["run/region"] = ""
    cloud.state["config"]["compute/region"] = "europe-west1"
    cloud.state["any_project"] = True
    cloud.run("setup", check=True)
    assert cloud.calls()[:3] == [["config", "get-value", "project"], ["config", "get-value", "run/region"],
                                 ["config", "get-value", "compute/region"]]
    assert ["--location", "europe-west1"] == cloud.calls()[-1][5:7]


def test_environment_wins_over_gcloud_config(cloud):
    cloud.state["any_project"] = True
    cloud.run("setup", env={"PROJECT_ID": "other-project", "REGION": "asia-east1"}, check=True)
    calls = cloud.calls()
    assert not any(argv[0] == "config" for argv in calls)
    for argv in calls[1:]:
        assert flag(argv, "--project") == "other-project"
    assert flag(calls[-1], "--location") == "asia-east1"


def test_missing_project_or_region_is_a_clear_error(cloud):
    cloud.state["config"]["project"] = ""
    assert "no project: set PROJECT_ID" in cloud.run("setup", check=False).stderr
    cloud.state["config"]["project"] = PROJECT
    cloud.state["config"]["run/region"] = ""
    assert "no region: set REGION" in cloud.run("setup", check=False).stderr


# --- setup and build ---------------------------------------------------------


def test_setup_enables_the_apis_and_creates_the_repository_once(cloud):
    cloud.run("setup", check=True)
    enable = [argv for argv in cloud.calls() if argv[:2] == ["services", "enable"]]
    assert enable == [["services", "enable", "run.googleapis.com", "cloudbuild.googleapis.com",
                       "iamcredentials.googleapis.com", "artifactregistry.googleapis.com",
                       "iam.googleapis.com", "--project", PROJECT]]
    create = cloud.calls()[-1]
    assert create[:4] == ["artifacts", "repositories", "create", "cloud-run-auth"]
    assert "--repository-format=docker" in create
    assert flag(create, "--location") == REGION
    assert cloud.state["repositories"] == [f"{REGION}/cloud-run-auth"]

    cloud.run("setup", check=True)
    assert not any(argv[:3] == ["artifacts", "repositories", "create"] for argv in cloud.calls())
    assert "already exists" in cloud.run("setup", check=True).stderr


def test_repository_name_override(cloud):
    env = {"AR_REPOSITORY": "my-images", "IMAGE_TAG": "v1"}
    cloud.run("setup", env=env, check=True)
    cloud.run("build", "receiver", env=env, check=True)
    assert cloud.state["images"] == [f"{REGION}-docker.pkg.dev/{PROJECT}/my-images/receiver:v1"]
    cloud.run("deploy-receiver", env=env, check=True)
    assert flag(deploys(cloud, "receiving-service")[0], "--image") == \
        f"{REGION}-docker.pkg.dev/{PROJECT}/my-images/receiver:v1"


@pytest.mark.parametrize("target, services", [("receiver", ["receiver"]), ("sender", ["sender"]),
                                              ("all", ["receiver", "sender"])])
def test_build_submits_the_cloud_build_config(cloud, target, services):
    cloud.run("setup", check=True)
    cloud.run("build", target, check=True)
    builds = cloud.calls()
    assert [argv[:2] for argv in builds] == [["config", "get-value"]] * 2 + [["builds", "submit"]] * len(services)
    for argv, service in zip(builds[2:], services):
        assert flag(argv, "--config") == "deploy/cloudbuild.yaml"
        assert flag(argv, "--substitutions") == \
            f"_SERVICE={service},_REGION={REGION},_REPOSITORY=cloud-run-auth,_TAG=latest"
        assert "." in argv
        assert "--tag" not in " ".join(argv)
    assert cloud.state["images"] == [f"{REGISTRY}/{s}:latest" for s in services]


def test_build_uploads_the_repository_root_wherever_it_is_run_from(cloud):
    cloud.run("setup", check=True)
    cloud.run("build", "receiver", check=True)
    (build,) = [json.loads(line) for line in cloud.log_file.read_text().splitlines()
                if json.loads(line)["argv"][0] == "builds"]
    assert build["cwd"] == str(cloud.root) != str(cloud.elsewhere)
    assert build["argv"][-3] == "."


def test_build_machine_type_is_optional(cloud):
    cloud.run("setup", check=True)
    cloud.run("build", "sender", env={"CLOUDBUILD_MACHINE_TYPE": "e2-highcpu-8"}, check=True)
    assert flag(cloud.calls()[-1], "--machine-type") == "e2-highcpu-8"


def test_build_without_the_dockerfile_stops_before_uploading(cloud):
    cloud.run("setup", check=True)
    (cloud.root / "Dockerfile.sender").unlink()
    proc = cloud.run("build", "sender", check=False)
    assert "Dockerfile.sender not found" in proc.stderr
    assert not any(argv[0] == "builds" for argv in cloud.calls())


# --- deploy-receiver ----------------------------------------------------------


def test_deploy_receiver_public_by_default(cloud):
    cloud.ready()
    cloud.run("deploy-receiver", check=True)
    (argv,) = deploys(cloud, "receiving-service")
    assert argv == ["run", "deploy", "receiving-service", "--image", f"{REGISTRY}/receiver:latest",
                    "--region", REGION, "--allow-unauthenticated", PROBE, "--project", PROJECT]


def test_deploy_receiver_private(cloud):
    ready_with_services(cloud)
    cloud.run("deploy-receiver", "--private", check=True)
    (argv,) = deploys(cloud, "receiving-service")
    assert "--no-allow-unauthenticated" in argv
    assert "--allow-unauthenticated" not in argv
    assert PROBE in argv
    assert "--invoker-iam-check" not in argv
    assert "allUsers" not in cloud.state["services"]["receiving-service"]["invokers"]


def test_private_turns_the_invoker_iam_check_back_on_where_it_was_off(cloud):
    ready_with_services(cloud)
    cloud.state["services"]["receiving-service"]["invoker_iam_disabled"] = True
    cloud.run("deploy-receiver", "--private", check=True)
    (argv,) = deploys(cloud, "receiving-service")
    assert "--no-allow-unauthenticated" in argv and "--invoker-iam-check" in argv
    assert cloud.state["services"]["receiving-service"]["invoker_iam_disabled"] is False
    assert cloud.run("check", check=True).stdout.startswith("HTTP 403\n")


def test_deploy_before_build_fails_as_gcloud_would(cloud):
    cloud.run("setup", check=True)
    proc = cloud.run("deploy-receiver", check=False)
    assert "not found" in proc.stderr


# --- service account, sender, grant -------------------------------------------


def test_create_sa_only_when_missing(cloud):
    cloud.run("setup", check=True)
    cloud.run("create-sa", check=True)
    creates = [argv for argv in cloud.calls() if argv[:3] == ["iam", "service-accounts", "create"]]
    assert creates == [["iam", "service-accounts", "create", "calling-service-sa",
                        "--display-name", "Calling Service Account", "--project", PROJECT]]
    proc = cloud.run("create-sa", check=True)
    assert not any(argv[:3] == ["iam", "service-accounts", "create"] for argv in cloud.calls())
    assert "already exists" in proc.stderr
    assert cloud.state["service_accounts"] == [SA]


def test_create_sa_waits_until_the_new_account_is_visible(cloud):
    cloud.run("setup", check=True)
    cloud.state["sa_visible_after"] = 2
    proc = cloud.run("create-sa", env={"IAM_WAIT_SECONDS": "7"}, check=True)
    describes = [argv for argv in cloud.calls() if argv[:3] == ["iam", "service-accounts", "describe"]]
    assert len(describes) == 1 + 3
    assert cloud.sleeps() == ["7", "7"]
    assert "waiting for service account" in proc.stderr


def test_deploy_sender_sets_the_receiver_url(cloud):
    cloud.ready()
    cloud.run("deploy-receiver", check=True)
    cloud.run("deploy-sender", check=True)
    (argv,) = deploys(cloud, "sending-service")
    assert flag(argv, "--set-env-vars") == f"RECEIVING_SERVICE_URL={RECEIVER_URL},ID_TOKEN_SOURCE=metadata"
    assert "--allow-unauthenticated" in argv
    assert PROBE in argv
    assert "--service-account" not in argv
    assert flag(argv, "--image") == f"{REGISTRY}/sender:latest"
    describe = [argv for argv in cloud.calls() if argv[:3] == ["run", "services", "describe"]][0]
    assert describe[3] == "receiving-service" and "--format=value(status.url)" in describe


def test_deploy_sender_no_token(cloud):
    ready_with_services(cloud)
    assert cloud.state["services"]["sending-service"]["env"] == {
        "RECEIVING_SERVICE_URL": RECEIVER_URL, "ID_TOKEN_SOURCE": "none"}


@pytest.mark.parametrize("name", ["calling-service-sa", SA])
def test_deploy_sender_with_a_service_account(cloud, name):
    ready_with_services(cloud)
    cloud.run("create-sa", check=True)
    cloud.run("deploy-sender", "--service-account", name, check=True)
    (argv,) = deploys(cloud, "sending-service")
    assert flag(argv, "--service-account") == SA
    assert cloud.state["services"]["sending-service"]["service_account"] == SA


def test_deploy_sender_switches_back_to_the_default_account(cloud):
    ready_with_services(cloud)
    cloud.run("create-sa", check=True)
    cloud.run("deploy-sender", "--service-account", "calling-service-sa", check=True)
    cloud.run("deploy-sender", check=True)
    (argv,) = deploys(cloud, "sending-service")
    assert flag(argv, "--service-account") == DEFAULT_SA
    assert ["projects", "describe", PROJECT, "--format=value(projectNumber)", "--project", PROJECT] in cloud.calls()
    assert cloud.state["services"]["sending-service"]["service_account"] == DEFAULT_SA


def test_deploy_sender_before_the_receiver_is_a_clear_error(cloud):
    cloud.ready()
    proc = cloud.run("deploy-sender", check=False)
    assert "receiving-service not found in us-central1: run 'deploy/cloud-run.sh deploy-receiver' first" in proc.stderr
    assert deploys(cloud, "sending-service") == []


def test_grant_binds_run_invoker_for_the_service_account(cloud):
    ready_with_services(cloud)
    cloud.run("create-sa", check=True)
    cloud.run("grant", check=True)
    assert cloud.calls()[-1] == ["run", "services", "add-iam-policy-binding", "receiving-service",
                                 "--region", REGION, f"--member=serviceAccount:{SA}",
                                 "--role=roles/run.invoker", "--project", PROJECT]
    cloud.run("grant", check=True)
    assert cloud.state["services"]["receiving-service"]["invokers"].count(f"serviceAccount:{SA}") == 1


def test_revoke_removes_the_grant_only_when_there(cloud):
    ready_with_services(cloud)
    cloud.run("create-sa", check=True)
    cloud.run("grant", check=True)
    cloud.run("revoke", check=True)
    assert cloud.calls()[-1][:3] == ["run", "services", "remove-iam-policy-binding"]
    assert f"serviceAccount:{SA}" not in cloud.state["services"]["receiving-service"]["invokers"]
    proc = cloud.run("revoke", check=True)
    assert not any(argv[2:3] == ["remove-iam-policy-binding"] for argv in cloud.calls())
    assert "has no run.invoker grant" in proc.stderr


# --- check ---------------------------------------------------------------------


def test_check_prints_status_and_body(cloud):
    ready_with_services(cloud)
    proc = cloud.run("check", check=True)
    assert proc.stdout == f"HTTP 200\n{HELLO}\n"
    (curl,) = cloud.calls("curl")
    assert curl[-1] == "https://sending-service-abc123xyz-uc.a.run.app"
    assert flag(curl, "--max-time") == "30"


def test_check_when_the_request_fails(cloud):
    ready_with_services(cloud)
    cloud.state["forced_answers"] = [["000", ""]]
    proc = cloud.run("check", check=True)
    assert proc.stdout.startswith("HTTP 000\n")
    assert "Could not resolve host" in proc.stderr


# --- the tutorial --------------------------------------------------------------


def tutorial_env(**extra):
    return {"IAM_WAIT_SECONDS": "0", **extra}


def test_tutorial_runs_the_five_stages_in_order(cloud):
    proc = cloud.run("tutorial", env=tutorial_env(), check=True)
    assert cloud.commands() == TUTORIAL
    assert [line.split(":")[0] for line in proc.stderr.splitlines() if line.startswith("stage ")] == \
        [f"stage {n}" for n in range(1, 6)]
    for n, status in enumerate([200, 403, 200, 403, 200], start=1):
        assert f"stage {n}: got {status} as expected" in proc.stderr
    assert proc.stdout.count("HTTP ") == 5
    assert "Tutorial complete" in proc.stderr
    assert cloud.sleeps() == []


def test_every_gcloud_call_is_printed_first(cloud):
    proc = cloud.run("tutorial", env=tutorial_env(), check=True)
    assert printed(proc.stderr) == cloud.calls()
    assert printed(proc.stderr, "curl")[0][:-1] == cloud.calls("curl")[0][:-1]


def test_tutorial_never_uses_gcr_io_tag_builds_or_disables_the_iam_check(cloud):
    cloud.run("tutorial", env=tutorial_env(), check=True)
    cloud.run("teardown", "--yes", check=True)
    text = everything(cloud)
    assert "gcr.io" not in text
    assert "--tag" not in text
    assert "--no-invoker-iam-check" not in text
    assert "--platform" not in text


def test_tutorial_skip_build(cloud):
    cloud.ready()
    cloud.run("tutorial", "--skip-build", env=tutorial_env(), check=True)
    assert not any(argv[0] == "builds" for argv in cloud.calls())


def test_tutorial_can_run_again(cloud):
    cloud.run("tutorial", env=tutorial_env(), check=True)
    proc = cloud.run("tutorial", env=tutorial_env(), check=True)
    calls = cloud.calls()
    # The grant left by the first run is removed, and the sender is put back
    # on the default account, so stages 3 and 4 mean what they did.
    assert ["run", "services", "remove-iam-policy-binding", "receiving-service", "--region", REGION,
            f"--member=serviceAccount:{SA}", "--role=roles/run.invoker", "--project", PROJECT] in calls
    assert flag(deploys(cloud, "sending-service")[0], "--service-account") == DEFAULT_SA
    assert not any(argv[:3] == ["iam", "service-accounts", "create"] for argv in calls)
    assert not any(argv[:3] == ["artifacts", "repositories", "create"] for argv in calls)
    assert "Tutorial complete" in proc.stderr


def test_tutorial_explains_a_403_at_stage_3_and_goes_on(cloud):
    cloud.state["default_sa_has_editor"] = False
    proc = cloud.run("tutorial", env=tutorial_env(), check=True)
    assert "stage 3: got 403" in proc.stderr
    assert "iam.automaticIamGrantsForDefaultServiceAccounts" in proc.stderr
    assert "stage 4: got 403 as expected" in proc.stderr
    assert "stage 5: got 200 as expected" in proc.stderr
    assert "could not call the receiver" in proc.stderr
    assert cloud.sleeps() == []  # a withheld grant does not come with time


def test_tutorial_counts_the_go_senders_relayed_403_page(cloud):
    cloud.state["sender_relay"] = "go"
    proc = cloud.run("tutorial", env=tutorial_env(), check=True)
    assert "stage 2: got 403 as expected" in proc.stderr
    assert "HTTP 200\nResponse from receiving service: \n<html>" in proc.stdout


def test_tutorial_waits_for_iam_changes_within_a_bound(cloud):
    cloud.state["lag"] = 2
    cloud.state["lag_on"] = ["disallow", "add-binding"]
    proc = cloud.run("tutorial", env=tutorial_env(IAM_WAIT_SECONDS="5"), check=True)
    assert "stage 2: got 200, expected 403. IAM changes can take a minute or two" in proc.stderr
    assert "stage 5: got 403, expected 200" in proc.stderr
    assert cloud.sleeps() == ["5"] * 4
    assert "Tutorial complete" in proc.stderr


def test_tutorial_stops_when_iam_changes_do_not_arrive(cloud):
    cloud.state["lag"] = 10
    cloud.state["lag_on"] = ["add-binding"]
    proc = cloud.run("tutorial", env=tutorial_env(IAM_RETRIES="3"), check=False)
    assert proc.returncode == 1
    assert "error: stage 5: expected 200, still got 403 after 3 attempts" in proc.stderr
    assert len(cloud.sleeps()) == 2
    assert "Tutorial complete" not in proc.stderr


def test_tutorial_stops_at_the_first_surprise(cloud):
    cloud.state["forced_answers"] = [["500", "boom"]]
    proc = cloud.run("tutorial", env=tutorial_env(IAM_RETRIES="1"), check=False)
    assert "error: stage 1: expected 200, still got 500" in proc.stderr
    assert "gcloud run services logs read sending-service" in proc.stderr
    assert not any(argv[:3] == ["run", "deploy", "receiving-service"] and "--no-allow-unauthenticated" in argv
                   for argv in cloud.calls())


def test_tutorial_stage_1_403_points_at_public_access(cloud):
    cloud.state["forced_answers"] = [["403", "<html>403 Forbidden</html>"]]
    proc = cloud.run("tutorial", env=tutorial_env(IAM_RETRIES="1"), check=False)
    assert "Domain restricted sharing" in proc.stderr


def test_tutorial_rejects_a_200_with_the_wrong_body(cloud):
    cloud.state["forced_answers"] = [["200", "Response from receiving service: something else"]]
    proc = cloud.run("tutorial", env=tutorial_env(IAM_RETRIES="1"), check=False)
    assert "stage 1: expected 200, still got 200 with an unexpected body" in proc.stderr


def test_retry_settings_are_validated(cloud):
    assert "IAM_RETRIES must be a positive integer" in \
        cloud.run("check", env={"IAM_RETRIES": "0"}, check=False).stderr
    assert "IAM_WAIT_SECONDS must be a whole number" in \
        cloud.run("check", env={"IAM_WAIT_SECONDS": "soon"}, check=False).stderr


# --- values spliced into --substitutions, flags and resource names -------------

# Each would change what gcloud is asked for if spliced as is: another
# substitution, a split argument, another path in an image name.
BREAKOUTS = ["x,_SERVICE=evil", "a b", "../x"]
SETTINGS = ["PROJECT_ID", "REGION", "AR_REPOSITORY", "IMAGE_TAG", "CLOUDBUILD_MACHINE_TYPE",
            "CURL_MAX_TIME", "IAM_RETRIES", "IAM_WAIT_SECONDS"]


def refused_naming(proc, name):
    """Asserts a failure ending in one error line that names name."""
    assert proc.returncode == 1, proc.stderr
    *before, last = proc.stderr.splitlines()
    assert not any(line.startswith("cloud-run.sh:") for line in before), proc.stderr
    assert last.startswith(f"cloud-run.sh: error: {name} "), last


@pytest.mark.parametrize("value", BREAKOUTS)
@pytest.mark.parametrize("name", SETTINGS)
def test_a_setting_that_would_break_out_is_refused_before_any_gcloud_call(cloud, name, value):
    for command in [["tutorial"], ["build", "all"], ["setup"]]:
        proc = cloud.run(*command, env={name: value}, check=False)
        refused_naming(proc, name)
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"'{value}'" in proc.stderr
        assert cloud.calls() == [], command
        assert cloud.calls("curl") == []


@pytest.mark.parametrize("name, value", [
    ("PROJECT_ID", "Demo-Project"), ("PROJECT_ID", "demo-"), ("PROJECT_ID", "1demo-project"),
    ("PROJECT_ID", "demo"), ("PROJECT_ID", "example.com:demo-project"), ("PROJECT_ID", "p" * 31),
    ("REGION", "us_central1"), ("REGION", "US-CENTRAL1"), ("REGION", "us-central1/x"),
    ("AR_REPOSITORY", "My-Images"), ("AR_REPOSITORY", "images-"), ("AR_REPOSITORY", "r" * 64),
    ("AR_REPOSITORY", "a/b"), ("IMAGE_TAG", ".latest"), ("IMAGE_TAG", "-latest"),
    ("IMAGE_TAG", "v1:2"), ("IMAGE_TAG", "t" * 129), ("CLOUDBUILD_MACHINE_TYPE", "e2 highcpu"),
    ("CURL_MAX_TIME", "0"), ("CURL_MAX_TIME", "30s"), ("IMAGE_TAG", "v1\nx"),
])
def test_each_setting_follows_googles_own_rule(cloud, name, value):
    proc = cloud.run("setup", env={"PROJECT_ID": PROJECT, "REGION": REGION, name: value}, check=False)
    refused_naming(proc, name)
    assert cloud.calls() == []


def test_values_at_the_edge_of_the_rules_are_accepted(cloud):
    cloud.state["any_project"] = True
    env = {"PROJECT_ID": "a12345", "REGION": "northamerica-northeast1", "AR_REPOSITORY": "r",
           "IMAGE_TAG": "V1.2_3-" + "t" * 121, "CLOUDBUILD_MACHINE_TYPE": "e2-highcpu-8", "CURL_MAX_TIME": "5"}
    cloud.run("setup", env=env, check=True)
    cloud.run("build", "receiver", env=env, check=True)
    assert cloud.state["images"] == [f"northamerica-northeast1-docker.pkg.dev/a12345/r/receiver:{env['IMAGE_TAG']}"]


@pytest.mark.parametrize("key, name", [("project", "PROJECT_ID"), ("run/region", "REGION")])
def test_a_bad_value_from_gcloud_config_is_refused_naming_it(cloud, key, name):
    cloud.state["config"][key] = "x,_SERVICE=evil"
    proc = cloud.run("build", "all", check=False)
    refused_naming(proc, name)
    assert "gcloud config" in proc.stderr
    assert all(argv[:2] == ["config", "get-value"] for argv in cloud.calls())


@pytest.mark.parametrize("value", BREAKOUTS + ["Calling-SA", "sa", "a@b,c@d", "a@b@c"])
@pytest.mark.parametrize("command", ["deploy-sender", "grant", "revoke"])
def test_a_bad_service_account_option_is_refused_before_any_gcloud_call(cloud, command, value):
    for args in [["--service-account", value], [f"--service-account={value}"]]:
        proc = cloud.run(command, *args, env={"PROJECT_ID": PROJECT, "REGION": REGION}, check=False)
        refused_naming(proc, "--service-account")
        assert cloud.calls() == []


def test_an_odd_receiver_url_from_gcloud_is_not_spliced_into_the_senders_env(cloud):
    cloud.ready()
    cloud.run("deploy-receiver", check=True)
    cloud.state["services"]["receiving-service"]["url"] = "https://evil.example,ID_TOKEN_SOURCE=none"
    proc = cloud.run("deploy-sender", check=False)
    assert proc.returncode == 1
    assert "receiving-service" in proc.stderr and "URL" in proc.stderr
    assert deploys(cloud, "sending-service") == []


# --- teardown ------------------------------------------------------------------


def test_teardown_asks_first(cloud):
    cloud.run("tutorial", env=tutorial_env(), check=True)
    proc = cloud.run("teardown", input="n\n", check=True)
    assert "[y/N]" in proc.stderr and "nothing deleted" in proc.stderr
    assert cloud.calls() == [["config", "get-value", "project"], ["config", "get-value", "run/region"]]
    cloud.run("teardown", input="", check=True)
    assert len(cloud.state["services"]) == 2


def test_teardown_deletes_services_account_and_images(cloud):
    cloud.run("tutorial", env=tutorial_env(), check=True)
    cloud.run("teardown", input="y\n", check=True)
    deletes = [argv for argv in cloud.calls() if "delete" in argv]
    assert deletes == [
        ["run", "services", "delete", "sending-service", "--region", REGION, "--quiet", "--project", PROJECT],
        ["run", "services", "delete", "receiving-service", "--region", REGION, "--quiet", "--project", PROJECT],
        ["iam", "service-accounts", "delete", SA, "--quiet", "--project", PROJECT],
        ["artifacts", "docker", "images", "delete", f"{REGISTRY}/receiver", "--quiet", "--project", PROJECT],
        ["artifacts", "docker", "images", "delete", f"{REGISTRY}/sender", "--quiet", "--project", PROJECT],
    ]
    assert cloud.state["services"] == {} and cloud.state["service_accounts"] == [] and cloud.state["images"] == []


def test_teardown_can_run_again(cloud):
    cloud.run("tutorial", env=tutorial_env(), check=True)
    cloud.run("teardown", "--yes", check=True)
    proc = cloud.run("teardown", "--yes", check=True)
    assert not any("delete" in argv for argv in cloud.calls())
    assert proc.stderr.count("already gone") == 5


def test_teardown_on_a_fresh_project(cloud):
    proc = cloud.run("teardown", "--yes", check=True)
    assert not any("delete" in argv for argv in cloud.calls())
    assert "already gone" in proc.stderr


def test_fake_rejects_what_it_does_not_know(cloud):
    """The fake's strictness is what makes the assertions above mean something."""
    script = cloud.root / "deploy" / "cloud-run.sh"
    script.write_text(script.read_text().replace("--allow-unauthenticated)", "--allow-unauthenticated --platform managed)"))
    cloud.ready()
    proc = cloud.run("deploy-receiver", check=False)
    assert proc.returncode == 2
    assert "fake gcloud: unsupported" in proc.stderr

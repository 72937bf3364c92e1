"""The Connect panel's model (atelier_lab._connect): the commands in the forms the
`atelier` CLI takes, filled in from the session contract."""

from __future__ import annotations

import doctest
import shlex

import atelier_lab._connect as connect
import pytest
from atelier_hub import connect as cli
from atelier_lab._connect import session_facts


def test_doctests():
    assert doctest.testmod(connect).failed == 0


def test_a_named_cluster_gpu_session():
    env = {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_SERVER_NAME": "train", "ATELIER_PROFILE": "gpu-1",
           "ATELIER_GPU_COUNT": "1", "ATELIER_GPU_TYPE": "nvidia-a10g", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/", "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/train/"}
    f = session_facts(env, home="/home/jovyan", origin="http://ignored:1", vscode=True)
    commands = {c["id"]: c["command"] for c in f["commands"]}
    assert commands == {
        "login": "atelier login --hub https://hub.example.org",
        "vscode": "atelier vscode train",
        "code": "code --remote ssh-remote+atelier-ada-train /home/jovyan",
        "ssh": "ssh atelier-ada-train",
        "kubeconfig": "atelier kubeconfig train",
    }
    assert f["mode"] == "cluster" and f["gpu"] == "1 x nvidia-a10g"
    assert f["vscode_url"] == "https://hub.example.org/user/ada/train/vscode/"


def test_no_code_server_no_link_and_a_bad_origin_is_not_echoed():
    f = session_facts({"JUPYTERHUB_USER": "ada"}, home="/home/jovyan", origin="http://x/<script>")
    assert f["vscode_url"] == "" and f["hub_url"] == ""
    assert f["commands"][0]["command"] == "atelier login --hub URL"


@pytest.mark.parametrize("user,server", [("ada", ""), ("ada", "gpu"), ("a@b.org", "x y")])
def test_the_panel_and_the_cli_agree(user, server):
    """The panel (in the session) shows what the hub's CLI (on the user's machine) writes."""
    env = {"JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": server, "KUBERNETES_SERVICE_HOST": "k"}
    f = session_facts(env, home=cli.SESSION_HOME, origin="http://127.0.0.1:8000")
    commands = {c["id"]: c["command"] for c in f["commands"]}
    alias = cli.ssh_alias(user=user, server=server)
    assert f["alias"] == alias
    assert commands["code"] == cli.code_command(alias=alias)
    assert commands["ssh"] == f"ssh {alias}"
    if " " not in server:  # the CLI quotes a server name with spaces; hub server names have none
        assert commands["vscode"] == cli.vscode_command(server=server)
        assert commands["kubeconfig"] == cli.kubeconfig_command(server=server)


def test_the_run_line_where_the_hub_runs_jobs_is_one_the_cli_takes():
    env = {"JUPYTERHUB_USER": "ada", "ATELIER_PROFILE": "cpu-large", "ATELIER_JOBS": "1"}
    commands = {c["id"]: c["command"] for c in session_facts(env, home="/home/jovyan")["commands"]}
    assert commands["run"] == "atelier run --profile cpu-large -- python train.py"
    # The CLI's own parser reads it as a job on that profile running `python train.py`.
    import argparse

    from atelier_hub import jobs_cli

    parser = argparse.ArgumentParser(prog="atelier")
    jobs_cli.add_parsers(parser.add_subparsers(dest="command"), lambda func: func)
    args = parser.parse_args(shlex.split(commands["run"])[1:])
    assert (args.profile, args.command) == ("cpu-large", ["--", "python", "train.py"])
    # A hub whose sessions run no jobs (process sessions, the cluster for now): no such line.
    without = session_facts({**env, "ATELIER_JOBS": ""}, home="/home/jovyan")["commands"]
    assert "run" not in {c["id"] for c in without}


def test_the_ray_line_where_the_hub_runs_clusters_is_one_the_cli_takes():
    env = {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_SERVER_NAME": "big",
           "ATELIER_RAY_CLUSTERS_URL": "http://127.0.0.1:8000/services/ray_clusters"}
    commands = {c["id"]: c["command"] for c in session_facts(env, home="/home/jovyan")["commands"]}
    assert commands["ray"] == "atelier ray up big --workers 2" == cli.ray_up_command(server="big")
    import argparse

    from atelier_hub import ray_cli

    parser = argparse.ArgumentParser(prog="atelier")
    ray_cli.add_parsers(parser.add_subparsers(dest="command"), lambda func: func)
    args = parser.parse_args(shlex.split(commands["ray"])[1:])
    assert (args.action, args.server, args.workers, args.profile) == ("up", "big", 2, None)
    # No service, no line (process sessions, cluster mode for now).
    without = session_facts({"JUPYTERHUB_USER": "ada"}, home="/home/jovyan")["commands"]
    assert "ray" not in {c["id"] for c in without}


def test_the_panels_ray_dashboard_link_is_where_the_service_says_and_the_server_proxies():
    from atelier_hub.ray_clusters import DASHBOARD_PATH, dashboard_url

    # A named server under a hub with a base URL, as JupyterHub gives it in the session.
    env = {"JUPYTERHUB_USER": "a b@x.org", "JUPYTERHUB_SERVER_NAME": "big",
           "JUPYTERHUB_SERVICE_PREFIX": "/base/user/a%20b@x.org/big/",
           "ATELIER_RAY_CLUSTERS_URL": "http://127.0.0.1:8000/services/ray_clusters"}
    link = session_facts(env, home="/home/jovyan", origin="http://127.0.0.1:8000")["ray_dashboard_url"]
    assert link == "http://127.0.0.1:8000" + dashboard_url("/base/", "a b@x.org", "big")
    assert link.endswith(env["JUPYTERHUB_SERVICE_PREFIX"] + DASHBOARD_PATH)
    # No service, no link.
    assert session_facts({"JUPYTERHUB_USER": "ada"}, home="/home/jovyan")["ray_dashboard_url"] == ""

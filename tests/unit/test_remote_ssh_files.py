"""The pure parts of the Remote-SSH way: the files `atelier vscode` edits keep every other
line the user had, the session's sshd config is key-only, and atelier_lab._ssh's examples run."""

from __future__ import annotations

import doctest
from pathlib import Path

import atelier_lab._ssh as lab_ssh
import pytest
from atelier_hub.connect import ssh_alias
from atelier_hub.remote import host_block, upsert_block, upsert_known_host
from atelier_lab._ssh import login_env, sshd_config


def block(alias: str, proxy: str = "atelier ssh-proxy") -> str:
    return host_block(alias=alias, proxy_command=proxy, identity_file=Path("/k"), known_hosts=Path("/kh"))


def test_atelier_lab_ssh_examples_pass():
    assert doctest.testmod(lab_ssh).failed == 0


def test_a_second_run_replaces_its_block_and_keeps_the_users_lines():
    mine = "Host work\n    User me\n\nHost *\n    ServerAliveInterval 10\n"
    once = upsert_block(mine, alias="atelier-ada", block=block("atelier-ada"))
    twice = upsert_block(once, alias="atelier-ada", block=block("atelier-ada", "atelier ssh-proxy --server x"))
    assert once.startswith("# >>> atelier-ada ")  # before `Host *`: ssh takes the first value
    assert twice.count("Host atelier-ada\n") == 1 and "--server x" in twice
    assert twice.endswith(mine)
    other = upsert_block(twice, alias="atelier-ada-gpu", block=block("atelier-ada-gpu"))
    assert "Host atelier-ada\n" in other and "Host atelier-ada-gpu\n" in other


def test_known_hosts_pins_one_key_per_alias():
    text = upsert_known_host("", alias="atelier-ada", host_key="ssh-ed25519 AAAA1 host")
    text = upsert_known_host(text, alias="atelier-bo", host_key="ssh-ed25519 BBBB")
    text = upsert_known_host(text, alias="atelier-ada", host_key="ssh-ed25519 AAAA2")
    assert text.splitlines() == ["atelier-ada ssh-ed25519 AAAA2", "atelier-bo ssh-ed25519 BBBB"]
    # The same key again changes nothing (a restart must not rewrite the file).
    assert upsert_known_host(text, alias="atelier-bo", host_key="ssh-ed25519 BBBB comment") == text


@pytest.mark.parametrize("user,server,alias", [
    ("ada", "", "atelier-ada"),
    ("ada", "gpu-1", "atelier-ada-gpu-1"),
    ("ada@example.org", "", "atelier-ada-example.org"),  # '@' would read as user@host
    ("a b", "x*y", "atelier-a-b-x-y"),                     # pattern characters of ssh_config
])
def test_alias_rule(user, server, alias):
    assert ssh_alias(user=user, server=server) == alias


def test_the_sessions_sshd_takes_keys_only_and_no_hub_variable():
    env = login_env({"PATH": "/opt/atelier/venv/bin:/bin", "JUPYTERHUB_API_TOKEN": "secret",
                     "JPY_API_TOKEN": "secret", "AWS_REGION": "us-east-1", "MULTI": "a\nb"})
    assert sorted(env) == ["ATELIER_LOGIN_PATH", "AWS_REGION", "PATH"]
    text = sshd_config(port=1, host_key="/h/k", authorized_keys="/h/a", env=env)
    for line in ("AuthenticationMethods publickey", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "ListenAddress 127.0.0.1:1", "PermitRootLogin no"):
        assert line + "\n" in text
    assert "secret" not in text

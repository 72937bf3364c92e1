"""Idle culling's decision, the profiles' culling settings, and usage totals: pure parts.

The real culler, sessions and hub are exercised in tests/integration/test_idle_culling.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from atelier_hub.cli import main
from atelier_hub.culling import Policy, Report, decide
from atelier_hub.profiles import Price, ProfileError, load_profiles
from atelier_hub.usage import record, summarize

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


P = Policy(idle_timeout=600, max_age=None, warn_before=120)


@pytest.mark.parametrize("case, kw, action, signal, words", [
    # idle past the timeout: stopped, and the reason says for how long and against what
    ("idle", dict(now=at(601), hub_last_activity=at(0)), "cull", None, "idle for 10 min 1 s"),
    # a busy kernel in a fresh report keeps it, whatever the hub thinks
    ("busy", dict(now=at(5000), hub_last_activity=at(0),
                  report=Report(time=at(4990), active={"kernel-busy": "1 kernel(s) busy"})),
     "keep", "kernel-busy", "kept alive by kernel-busy"),
    # a report too old is no evidence: a session that stopped reporting does not keep itself alive
    ("stale", dict(now=at(5000), hub_last_activity=at(0),
                   report=Report(time=at(100), active={"ssh": "1 SSH connection(s)"})),
     "cull", None, "no activity report"),
    # the session's own last activity (a notebook saved through the API) counts
    ("session activity", dict(now=at(700), hub_last_activity=at(0),
                              report=Report(time=at(690), last_activity=at(300))),
     "keep", None, "session activity"),
    # an idle JupyterLab tab keeps the hub's activity fresh (it polls): the session's account wins
    ("idle tab", dict(now=at(700), hub_last_activity=at(695),
                      report=Report(time=at(690), last_activity=at(50))), "cull", None, "idle for 10 min 50 s"),
    # Extend restarts the idle timer
    ("extend", dict(now=at(700), hub_last_activity=at(0), extended_at=at(650)), "keep", None, "Extend"),
])
def test_decide(case, kw, action, signal, words):
    d = decide(policy=P, started=T0, **kw)
    assert (d.action, d.signal) == (action, signal), d
    assert words in d.reason


def test_max_age_stops_even_a_busy_server_and_warnings_come_ahead():
    p = Policy(idle_timeout=600, max_age=3600, warn_before=120)
    busy = Report(time=at(3599), active={"gpu": "GPU 0 at 90%"})
    assert decide(now=at(3600), policy=p, started=T0, hub_last_activity=at(3590), report=busy).action == "cull"
    early = decide(now=at(100), policy=P, started=T0, hub_last_activity=at(0))
    late = decide(now=at(500), policy=P, started=T0, hub_last_activity=at(0))
    assert (early.warn, late.warn) == (False, True) and late.cull_at == at(600)


def _profile(tmp_path, name, extra=""):
    (tmp_path / f"{name}.yaml").write_text(
        f"name: {name}\ndisplay_name: X\ncpu: {{limit: 1}}\nmemory: {{limit: 1G}}\n{extra}")


def test_gpu_profiles_default_shorter_and_the_shipped_ones_say_so(tmp_path):
    _profile(tmp_path, "cpu")
    _profile(tmp_path, "gpu", "gpu: {count: 1}\n")
    got = {p.name: p.idle_timeout for p in load_profiles(tmp_path)}
    assert got["gpu"] < got["cpu"]
    shipped = {p.name: p for p in load_profiles("profiles")}
    assert all(p.idle_timeout < shipped["cpu-small"].idle_timeout for p in shipped.values() if p.gpu_count)


@pytest.mark.parametrize("culling, words", [
    ("{idle_timeout: 0}", "culling.idle_timeout: must be more than 0 seconds"),
    ("{idle_timeout: ten}", "culling.idle_timeout: expected a whole number of seconds"),
    ("{max_age: -5}", "culling.max_age: must be more than 0 seconds"),
    ("{idle: 60}", "culling.idle: unknown field"),
    ("{idle_timeout: 60, warn_before: 60}", "must be below culling.idle_timeout"),
])
def test_bad_culling_values_name_file_field_and_fix(tmp_path, culling, words):
    _profile(tmp_path, "bad", f"culling: {culling}\n")
    with pytest.raises(ProfileError) as exc:
        load_profiles(tmp_path)
    assert str(tmp_path / "bad.yaml") in str(exc.value) and words in str(exc.value), exc.value


def test_usage_counts_only_the_window_and_running_servers_until_now(tmp_path):
    (p,) = [p for p in load_profiles("profiles") if p.name == "cpu-small"]  # 2 CPU, 4G
    f = tmp_path / "usage.jsonl"
    record(f, "start", user="ada", server="", profile=p, when=at(0))
    record(f, "stop", user="ada", server="", when=at(3600))
    record(f, "start", user="bob", server="x", profile=p, when=at(1800))  # still running
    events = [json.loads(line) for line in f.read_text().splitlines()]
    s = summarize(events, now=at(5400))
    assert s["by_user"]["ada"]["cpu_hours"] == 2.0 and s["by_user"]["ada"]["memory_gb_hours"] == 4.0
    assert s["by_user"]["bob"]["hours"] == 1.0
    assert s["by_profile"]["cpu-small"]["servers"] == 2 and s["total"]["hours"] == 2.0
    window = summarize(events, since=at(3000), until=at(4000), now=at(5400))
    assert window["by_user"]["ada"]["hours"] == pytest.approx(600 / 3600, abs=1e-3)
    assert window["by_user"]["bob"]["hours"] == pytest.approx(1000 / 3600, abs=1e-3)
    assert summarize(events, since=at(4000), now=at(5400))["by_user"].keys() == {"bob"}


def test_usage_command_formats_and_refuses_bad_dates(tmp_path, capsys):
    (p,) = [p for p in load_profiles("profiles") if p.name == "cpu-small"]
    record(tmp_path / "usage.jsonl", "start", user="ada", server="", profile=p, when=at(0))
    record(tmp_path / "usage.jsonl", "stop", user="ada", server="", when=at(1800))
    main(["usage", "--state", str(tmp_path), "--format", "json"])
    assert json.loads(capsys.readouterr().out)["by_user"]["ada"]["cpu_hours"] == 1.0
    main(["usage", "--state", str(tmp_path), "--format", "csv"])
    assert "user,ada,1,0.5,1.0,2.0,0.0" in capsys.readouterr().out
    main(["usage", "--state", str(tmp_path)])
    assert "ada" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["usage", "--state", str(tmp_path), "--since", "yesterday"])
    assert exc.value.code == 2 and "write it as 2026-03-01" in capsys.readouterr().err


def test_ssh_connections_are_sshds_per_connection_processes(tmp_path):
    from atelier_lab._activity import _ssh_sessions

    for pid, cmd in ((10, b"sshd: /usr/sbin/sshd -D -f none [listener] 0 of 10-100 startups"),
                     (11, b"sshd: jovyan@pts/0"), (12, b"sshd-session: jovyan@notty"),
                     (13, b"python\0-m\0sshd: x@y"), (14, b"sshd: jovyan [priv]")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(cmd)
    (tmp_path / "self").mkdir()  # not a process folder
    assert _ssh_sessions(tmp_path) == 2  # the listener, a privileged parent and others do not count
    # sshd forks to run the command; until the child execs it has its parent's title: one connection
    (tmp_path / "11" / "stat").write_text("11 (sshd) S 9 11 11 0")
    (tmp_path / "15").mkdir()
    (tmp_path / "15" / "cmdline").write_bytes(b"sshd: jovyan@pts/0")
    (tmp_path / "15" / "stat").write_text("15 (sshd: (x) y) R 11 11 11 0")
    assert _ssh_sessions(tmp_path) == 2
    # a third connection, from the listener
    (tmp_path / "16").mkdir()
    (tmp_path / "16" / "cmdline").write_bytes(b"sshd: jovyan@pts/1")
    (tmp_path / "16" / "stat").write_text("16 (sshd) S 10 16 16 0")
    assert _ssh_sessions(tmp_path) == 3


def test_gpu_signal_is_skipped_without_a_gpu_for_the_session(monkeypatch):
    import asyncio

    from atelier_lab._activity import gpu_busy

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU session: not a signal, nothing run
    assert asyncio.run(gpu_busy(None)) is None
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi at all
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert asyncio.run(gpu_busy(None)) is None


def test_a_job_counts_as_kind_job_beside_the_servers(tmp_path):
    from atelier_hub.usage import read_events, record, render, summarize

    small = {p.name: p for p in load_profiles(Path(__file__).resolve().parents[2] / "profiles")}["cpu-small"]
    f = tmp_path / "usage.jsonl"
    t0 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    record(f, "start", user="ada", server="", profile=small, when=t0, kind="server")
    record(f, "stop", user="ada", server="", when=t0 + timedelta(hours=1))
    record(f, "start", user="ada", server="job-train", profile=small, when=t0, kind="job")
    record(f, "stop", user="ada", server="job-train", when=t0 + timedelta(hours=2))
    # A line written before jobs existed has no kind: a server's.
    f.write_text(f.read_text() + json.dumps({"event": "start", "time": "2026-03-01T10:00:00Z", "user": "bo",
                                             "server": "", "profile": "cpu-small", "cpu": 1, "memory": 1e9,
                                             "gpus": 0}) + "\n" + json.dumps(
        {"event": "stop", "time": "2026-03-01T13:00:00Z", "user": "bo", "server": ""}) + "\n")
    s = summarize(read_events(f), now=t0 + timedelta(days=1))
    assert {k: (v["servers"], v["hours"]) for k, v in s["by_kind"].items()} == {"server": (2, 4.0), "job": (1, 2.0)}
    assert s["by_kind"]["job"]["cpu_hours"] == 2.0 * small.cpu.limit
    table = render(s, "table")
    assert [line.split()[:4] for line in table.splitlines() if line.startswith("kind")] == [
        ["kind", "job", "1", "2.00"], ["kind", "server", "2", "4.00"]]


def test_usage_per_day_splits_runs_at_midnight_utc_and_keeps_to_the_window():
    """A run from 22:00 on the 1st to 02:00 on the 3rd: 2 h, 24 h and 2 h; asked from noon
    on the 2nd, the 1st is gone and the 2nd holds its last 12 h. The days add up to the total."""
    ev = [{"event": "start", "time": "2026-03-01T22:00:00Z", "user": "ada", "server": "", "profile": "p",
           "cpu": 2, "memory": 1e9, "gpus": 1, "price_per_hour": 0.5},
          {"event": "stop", "time": "2026-03-03T02:00:00Z", "user": "ada", "server": ""}]
    whole = summarize(ev, now=datetime(2026, 3, 10, tzinfo=timezone.utc))
    assert {d: v["hours"] for d, v in whole["by_day"].items()} == {
        "2026-03-01": 2.0, "2026-03-02": 24.0, "2026-03-03": 2.0}
    assert whole["by_day"]["2026-03-02"]["gpu_hours"] == 24.0 and whole["by_day"]["2026-03-02"]["cost"] == 12.0
    assert sum(v["cpu_hours"] for v in whole["by_day"].values()) == whole["total"]["cpu_hours"] == 56.0
    part = summarize(ev, since=datetime(2026, 3, 2, 12, tzinfo=timezone.utc),
                     now=datetime(2026, 3, 10, tzinfo=timezone.utc))
    assert {d: v["hours"] for d, v in part["by_day"].items()} == {"2026-03-02": 12.0, "2026-03-03": 2.0}


def test_usage_per_group_counts_a_run_in_each_group_its_user_was_in_at_its_start(tmp_path):
    from atelier_hub.usage import read_events, render

    small = {p.name: p for p in load_profiles(Path(__file__).resolve().parents[2] / "profiles")}["cpu-small"]
    f = tmp_path / "usage.jsonl"
    t0 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    record(f, "start", user="ada", server="", profile=small, when=t0, kind="server", groups=["vision", "nlp"])
    record(f, "stop", user="ada", server="", when=t0 + timedelta(hours=1))
    record(f, "start", user="bo", server="", profile=small, when=t0, kind="server", groups=["vision"])
    record(f, "stop", user="bo", server="", when=t0 + timedelta(hours=3))
    record(f, "start", user="cy", server="", profile=small, when=t0, kind="server")  # in no group
    record(f, "stop", user="cy", server="", when=t0 + timedelta(hours=2))
    s = summarize(read_events(f), now=t0 + timedelta(days=1))
    assert {g: (v["servers"], v["hours"]) for g, v in s["by_group"].items()} == {"nlp": (1, 1.0), "vision": (2, 4.0)}
    assert s["by_group"]["vision"]["cpu_hours"] == 4.0 * small.cpu.limit
    assert s["total"]["hours"] == 6.0  # a run in two groups is counted once in the total
    table = render(s, "table")
    assert [line.split()[:4] for line in table.splitlines() if line.startswith("group")] == [
        ["group", "nlp", "1", "1.00"], ["group", "vision", "2", "4.00"]]


def test_atelier_usage_cost_prints_the_cost_lines_most_costly_first(tmp_path, capsys, monkeypatch):
    priced = {p.name: p for p in load_profiles(Path(__file__).resolve().parents[2] / "profiles")}["cpu-small"]
    priced = priced.model_copy(update={"price": Price(cpu_hour=0.5)})
    f = tmp_path / "usage.jsonl"
    t0 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    for user, hours in (("ada", 1), ("bo", 3)):
        record(f, "start", user=user, server="", profile=priced, when=t0, kind="server")
        record(f, "stop", user=user, server="", when=t0 + timedelta(hours=hours))
    main(["usage", "--file", str(f), "--cost"])
    lines = capsys.readouterr().out.splitlines()
    users = [line.split() for line in lines if line.startswith("user")]
    per_hour = 0.5 * priced.cpu.limit
    assert users == [["user", "bo", f"{3 * per_hour:.2f}"], ["user", "ada", f"{1 * per_hour:.2f}"]], lines
    assert lines[-1].split() == ["total", f"{4 * per_hour:.2f}"]
    assert ["day", "2026-03-01", f"{4 * per_hour:.2f}"] in [line.split() for line in lines]
    # Nowhere to read from: no state folder, no login. The message names both ways.
    monkeypatch.delenv("ATELIER_HUB_URL", raising=False)
    monkeypatch.delenv("ATELIER_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-login"))
    with pytest.raises(SystemExit):
        main(["usage", "--state", str(tmp_path / "absent"), "--cost"])
    err = capsys.readouterr().err
    assert "no state folder at" in err and "atelier login" in err, err

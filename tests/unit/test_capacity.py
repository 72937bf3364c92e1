"""The queue's order (atelier_hub.capacity), with literal expected orders from the issue's
scenarios: six users for four GPUs, one stopping, two teams of equal weight, guarantees,
the per-user limit and the ETA."""

from __future__ import annotations

import doctest

import pytest
from atelier_hub import capacity, usage
from atelier_hub.capacity import (
    CapacityError,
    CapacitySettings,
    Holder,
    Request,
    admissible,
    etas,
    load_capacity,
    over_limit,
    queue_order,
)
from atelier_hub.embedded import gpus, spawner_base

DEFAULT = CapacitySettings()


def req(user: str, since: float, *, group: str = "everyone", gpus: int = 1, runs_for: float | None = None,
        kind: str = "server") -> Request:
    return Request(key=f"{user}/gpu", user=user, group=group, gpus=gpus, since=since, kind=kind, runs_for=runs_for)


def hold(r: Request, ends_at: float | None = None) -> Holder:
    return Holder(key=r.key, user=r.user, group=r.group, gpus=r.gpus, kind=r.kind, ends_at=ends_at)


def test_six_users_for_four_gpus_four_run_two_wait_then_one_stops():
    asks = [req(u, t) for t, u in enumerate(["u1", "u2", "u3", "u4", "u5", "u6"])]
    started = admissible(asks, [], DEFAULT, free=4)
    assert [r.user for r in started] == ["u1", "u2", "u3", "u4"]
    holders = [hold(r) for r in started]
    waiting = [r for r in asks if r not in started]
    assert [r.user for r in queue_order(waiting, holders, DEFAULT)] == ["u5", "u6"]  # positions 1 and 2
    assert admissible(waiting, holders, DEFAULT, free=0) == []

    # u2 stops: position 1 (u5) starts, u6 becomes position 1.
    holders = [h for h in holders if h.user != "u2"]
    started = admissible(waiting, holders, DEFAULT, free=1)
    assert [r.user for r in started] == ["u5"]
    waiting = [r for r in waiting if r not in started]
    assert [r.user for r in queue_order(waiting, [*holders, hold(started[0])], DEFAULT)] == ["u6"]


def test_two_teams_of_equal_weight_the_next_gpu_goes_to_the_team_holding_none_though_it_asked_later():
    teams = CapacitySettings(groups={"team-a": {"weight": 1}, "team-b": {"weight": 1}})
    holders = [hold(req(f"a{i}", i, group="team-a")) for i in range(4)]
    waiting = [req("a5", 10, group="team-a"), req("b1", 11, group="team-b"), req("a6", 12, group="team-a"),
               req("b2", 13, group="team-b")]
    assert [r.user for r in queue_order(waiting, holders, teams)] == ["b1", "b2", "a5", "a6"]
    assert [r.user for r in admissible(waiting, holders, teams, free=1)] == ["b1"]


def test_weights_two_to_one_take_turns_two_to_one():
    teams = CapacitySettings(groups={"big": {"weight": 2}, "small": {"weight": 1}})
    waiting = [req(f"b{i}", i, group="big") for i in range(4)] + [req(f"s{i}", 10 + i, group="small") for i in range(2)]
    # standing = held / weight: big 0, small 0 -> b0 (earlier); big 0.5 -> s0; big 0.5, small 1 -> b1; ...
    assert [r.user for r in queue_order(waiting, [], teams)] == ["b0", "s0", "b1", "b2", "s1", "b3"]


def test_a_group_below_its_guarantee_goes_first():
    teams = CapacitySettings(groups={"a": {"guaranteed_gpus": 3}, "b": {"guaranteed_gpus": 1}})
    holders = [hold(req("a1", 0, group="a")), hold(req("a2", 1, group="a")), hold(req("b1", 2, group="b"))]
    waiting = [req("b2", 5, group="b"), req("a3", 6, group="a")]
    # a holds 2 of its 3 (standing -1), b 1 of its 1 (standing 0): a3 first though b2 asked first.
    assert [r.user for r in queue_order(waiting, holders, teams)] == ["a3", "b2"]


def test_admission_is_strict_a_four_gpu_request_is_not_overtaken_by_smaller_ones():
    waiting = [req("big", 0, gpus=4), req("small", 1)]
    assert admissible(waiting, [], DEFAULT, free=3) == []
    assert [r.user for r in admissible(waiting, [], DEFAULT, free=4)] == ["big"]


def test_a_user_over_their_limit_is_refused_with_their_holders_named():
    holders = [Holder("ann/train", "ann", "everyone", 1), Holder("ann/job-sweep", "ann", "everyone", 1, kind="job"),
               Holder("bob/x", "bob", "everyone", 2)]
    msg = over_limit("ann", 1, key="ann/third", holders=holders, waiting=[], limit=2)
    assert msg == ("GPU limit reached: you may hold 2 GPUs at a time, and these hold 2: server train (1 GPU), "
                   "job sweep (1 GPU). Stop one of them, or wait for it to end.")
    assert over_limit("bob", 0 + 1, key="bob/y", holders=holders, waiting=[], limit=3) is None
    waiting = [Request("bob/y", "bob", "everyone", 1, since=3)]
    assert "server y (1 GPU, waiting)" in over_limit("bob", 1, key="bob/z", holders=holders, waiting=waiting, limit=3)
    assert over_limit("ann", 1, key="ann/train", holders=holders, waiting=[], limit=2) is None  # its own GPUs
    assert over_limit("ann", 5, key="ann/x", holders=[], waiting=[], limit=None) is None


def test_eta_from_the_holders_known_ends_in_queue_order():
    holders = [Holder("a/x", "a", "everyone", 1, ends_at=1600), Holder("b/x", "b", "everyone", 1, ends_at=1300),
               Holder("c/x", "c", "everyone", 2, ends_at=None)]  # a job without a timeout: never back
    order = [req("d", 1, runs_for=1200), req("e", 2), req("f", 3, gpus=2)]
    # d takes b's GPU at 1300, e takes a's at 1600, f needs 2: d's back at 2500, then nothing more.
    assert etas(order, holders, free=0, now=1000) == {"d/gpu": 1300, "e/gpu": 1600, "f/gpu": None}
    # overdue holders count as ending now; a free GPU starts the first at once
    assert etas([req("d", 1)], [Holder("a/x", "a", "everyone", 1, ends_at=5)], free=1, now=1000) == {"d/gpu": 1000}


@pytest.mark.parametrize(("text", "expected"), [
    # a typo'd field is named with the fix
    ("gpus_per_usr: 1\n", "gpus_per_usr: Extra inputs are not permitted; remove it or check its spelling"),
    # guarantees past the pool
    ("gpu_devices: [0, 1]\ngroups: {a: {guaranteed_gpus: 3}}\n", "groups guarantee 3 GPUs but the pool has 2"),
    ("gpu_devices: [0, 0]\n", "gpu_devices: Value error, [0, 0] lists a device twice"),
    ("groups: {a: {weight: 0}}\n", "groups.a.weight: Input should be greater than 0"),
    ("max_wait: 5\n", "max_wait: Input should be greater than or equal to 60"),
])
def test_bad_capacity_settings_name_the_field_and_the_fix(tmp_path, text, expected):
    path = tmp_path / "capacity.yaml"
    path.write_text(text)
    with pytest.raises(CapacityError) as exc:
        load_capacity(path)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)


def test_good_capacity_settings_load(tmp_path):
    path = tmp_path / "capacity.yaml"
    path.write_text("gpu_devices: [0, 1, 2, 3]\ngpus_per_user: 2\ngroups:\n  team-a: {weight: 2, guaranteed_gpus: 1}\n")
    s = load_capacity(path)
    assert (s.gpu_devices, s.gpus_per_user, s.groups["team-a"].weight, s.default_group) == ([0, 1, 2, 3], 2, 2.0,
                                                                                           "everyone")


@pytest.mark.parametrize("module", [capacity, gpus, spawner_base, usage])
def test_doctests(module):
    # capacity_note's lines: "3 of 8 GPUs free · fits now", "full: you would be 2nd in line, about 25 min"
    assert doctest.testmod(module).failed == 0


def test_a_gpu_jobs_expected_hold_is_how_long_its_users_last_runs_of_it_held_their_gpus(tmp_path):
    """The spawner's request for a job (the GPU queue's ETAs count on it): the median of the
    user's finished runs of the same command on the same profile, from the real usage
    records (start to stop, not the wait) and the jobs service's records (the command)."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from atelier_hub.jobs import JobRecord
    from atelier_hub.profiles import Profile

    gpu = Profile(name="gpu-1", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1},
                  culling={"max_age": 7200})
    usage_file, t0 = tmp_path / "usage.jsonl", datetime(2026, 1, 1, tzinfo=timezone.utc)
    # ada's jobs: train.py ran 10, 30 and 20 min; eval.py 1 and 2 min; bo's train.py 50 min.
    for i, (user, name, command, minutes) in enumerate([
            ("ada", "t1", ["python", "train.py"], 10), ("ada", "e1", ["python", "eval.py"], 1),
            ("ada", "t2", ["python", "train.py"], 30), ("bo", "t1", ["python", "train.py"], 50),
            ("ada", "e2", ["python", "eval.py"], 2),
            ("ada", "t3", ["python", "train.py"], 20)]):
        JobRecord(name=name, user=user, profile="gpu-1", command=command).save(tmp_path / "jobs")
        start = t0 + timedelta(hours=i)
        usage.record(usage_file, "start", user=user, server=f"job-{name}", profile=gpu, kind="job", when=start)
        usage.record(usage_file, "stop", user=user, server=f"job-{name}", when=start + timedelta(minutes=minutes))
    spawner = SimpleNamespace(usage_file=str(usage_file), state_dir=str(tmp_path), user=SimpleNamespace(name="ada"),
                              name="job-t4", _key="ada/job-t4", groups=lambda: set(), capacity=DEFAULT)
    for method in ("gpu_holds_for", "_job_history"):
        setattr(spawner, method, getattr(spawner_base.EmbeddedSpawnerMixin, method).__get__(spawner))

    def runs_for(command, timeout=None):
        options = {"job": {"name": "t4", "command": command, **({"timeout": timeout} if timeout else {})}}
        return spawner_base.EmbeddedSpawnerMixin._gpu_request(spawner, gpu, options=options).runs_for

    assert runs_for(["python", "train.py"]) == 20 * 60  # the median of 10, 30 and 20 min
    assert runs_for(["python", "train.py"], timeout=900) == 900  # it is ended at its timeout anyway
    # No run of it: her last 5 runs on gpu-1 (10, 1, 30, 2 and 20 min), whose median is 10 min.
    assert runs_for(["python", "new.py"]) == 10 * 60
    spawner.user = SimpleNamespace(name="cy")  # no history: the profile's max_age
    assert runs_for(["python", "train.py"]) == 7200

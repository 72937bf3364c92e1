"""The session contract, the profile picker, logins and GPU assignment (pure parts)."""

from __future__ import annotations

import json
import stat

import pytest
from atelier_hub.auth import UserError, UsersFile, check_password, hash_password
from atelier_hub.embedded_spawner import render_profile_form
from atelier_hub.gpus import GPUPool, GPUUnavailable
from atelier_hub.profiles import Profile
from atelier_hub.session import THREAD_VARS, session_env
from atelier_hub.settings import MLflowService, S3Service, Services, SettingsError, load_deployment

SMALL = Profile(name="cpu-small", display_name="Small", cpu={"limit": 2, "guarantee": 0.5},
                memory={"limit": "4G", "guarantee": "1G"})
GPU = Profile(name="gpu-1", display_name="1 GPU <b>", cpu={"limit": 8}, memory={"limit": "32G"},
              gpu={"count": 1, "type": "a100"})
SERVICES = Services(
    s3=S3Service(endpoint_url="http://127.0.0.1:9000", bucket="shared", access_key_id="AK", secret_access_key="SK"),
    mlflow=MLflowService(tracking_uri="http://127.0.0.1:8000/services/mlflow"),
)


def test_session_env_configures_each_library_its_own_way():
    env = session_env(SMALL, username="ada", services=SERVICES, threads=2, api_token="tok")
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AK", "SK")
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["ATELIER_SHARED_BUCKET"] == "shared"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:8000/services/mlflow"
    assert env["MLFLOW_TRACKING_TOKEN"] == "tok"
    assert all(env[v] == "2" for v in THREAD_VARS)
    assert (env["ATELIER_PROFILE"], env["ATELIER_CPU_LIMIT"], env["ATELIER_CPU_GUARANTEE"]) == ("cpu-small", "2", "0.5")
    assert (env["ATELIER_MEM_LIMIT"], env["ATELIER_MEM_GUARANTEE"]) == (str(4 * 10**9), str(10**9))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["ATELIER_GPU_COUNT"] == "0"


def test_session_env_gpu_and_absent_services():
    env = session_env(GPU, username="ada", services=Services(), threads=8, gpu_ids=[2])
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["ATELIER_GPU_TYPE"] == "a100"
    assert not any(k.startswith(("AWS_", "MLFLOW_")) for k in env)
    # An open MLflow server gets no token.
    env = session_env(SMALL, username="a", threads=1, api_token="tok",
                      services=Services(mlflow=MLflowService(tracking_uri="http://x", auth="none")))
    assert "MLFLOW_TRACKING_TOKEN" not in env


def test_profile_form_escapes_and_marks_the_default():
    html = render_profile_form([SMALL, GPU], free_gpus=0, total_gpus=0)
    assert 'value="cpu-small" checked' in html and 'value="gpu-1">' in html
    assert "1 GPU &lt;b&gt;" in html and "<b>" not in html.split("<style>")[0]
    assert "No GPU on this machine" in html and "32G" in html


def test_passwords_are_scrypt_hashed(tmp_path):
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert check_password("correct horse", stored) and not check_password("wrong", stored)
    assert not check_password("x", None) and not check_password("x", "md5$abc")


def test_users_file(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    pw = users.add("ada", admin=True)
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert pw not in (tmp_path / "users.json").read_text()
    assert check_password(pw, users.load()["ada"]["password"])
    assert users.add("bob", password=False) is None and users.load()["bob"]["password"] is None
    with pytest.raises(UserError, match="already exists"):
        users.add("ada")
    with pytest.raises(UserError, match="not valid"):
        users.add("Bad Name")
    with pytest.raises(UserError, match="no user 'zed'"):
        users.set_password("zed")
    users.remove("bob")
    assert set(users.load()) == {"ada"}


def test_gpu_pool_hands_each_gpu_to_one_server():
    pool = GPUPool([(0, "A100"), (1, "A100")])
    assert pool.acquire("ada/", 1, profile="gpu-1") == [0]
    assert pool.acquire("ada/", 1, profile="gpu-1") == [0]  # the same server asks again
    assert pool.acquire("bob/", 1, profile="gpu-1") == [1]
    with pytest.raises(GPUUnavailable, match="has 2 and 0 free"):
        pool.acquire("cy/", 1, profile="gpu-1")
    pool.release("ada/")
    assert pool.acquire("cy/", 1, profile="gpu-1") == [0]
    with pytest.raises(GPUUnavailable, match="no NVIDIA GPU"):
        GPUPool([]).acquire("x/", 1, profile="gpu-1")
    assert GPUPool([]).acquire("x/", 0, profile="cpu-small") == []


def test_deployment_settings_errors_name_the_field(tmp_path):
    good = tmp_path / "d.json"
    good.write_text(json.dumps({"services": {"s3": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"}}}))
    assert load_deployment(good).services.s3.bucket == "b"
    bad = tmp_path / "d.yaml"
    bad.write_text("services:\n  s3:\n    bucket: b\n    endpoint: http://x\n")
    with pytest.raises(SettingsError, match="services.s3.endpoint: .*remove it or check its spelling"):
        load_deployment(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_deployment(tmp_path / "missing.yaml")

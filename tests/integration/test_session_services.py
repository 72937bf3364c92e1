"""Every session is preconfigured: S3 (boto3, pandas, pyarrow), Spark on s3a and Ray work
with no set-up, sized to the profile; a service that is down fails fast, naming it.
(A Spark table queried from Trino is in test_trino.py, whose stack runs Trino.)

Each snippet runs in a real kernel of a session spawned through the real hub; results
are checked from outside the session (objects in the S3 server, parquet read back).
"""

from __future__ import annotations

import io
import json
import os

import pyarrow.parquet as pq
import pytest
from kernel import run_code

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small(stack, alice):
    model = stack.spawn("alice", "cpu-small", server="svc-small")
    yield model
    stack.stop_server("alice", "svc-small")


def test_pandas_and_pyarrow_read_and_write_s3_paths(stack, alice, small):
    code = """
import os, fsspec, pandas as pd, pyarrow.dataset as ds
bucket = os.environ["ATELIER_SHARED_BUCKET"]
pd.DataFrame({"x": [1, 2, 3]}).to_parquet(f"s3://{bucket}/pandas/frame.parquet")   # fsspec/s3fs
back = pd.read_parquet(f"s3://{bucket}/pandas/frame.parquet")
table = ds.dataset(f"{bucket}/pandas/", filesystem=fsspec.filesystem("s3"), format="parquet").to_table()
print(int(back.x.sum()), table.num_rows)
"""
    assert run_code(stack.url, small["url"], alice["token"], code).split() == ["6", "3"]
    body = stack.s3().get_object(Bucket="atelier-shared", Key="pandas/frame.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).column("x").to_pylist() == [1, 2, 3]


# The one CPU count of a session (thread pools, Spark, Ray): the profile file's CPU limit,
# capped by this machine's cores (profiles/cpu-small.yaml: 2, profiles/cpu-large.yaml: 8).
SMALL_CPUS = min(2, os.cpu_count() or 1)
LARGE_CPUS = min(8, os.cpu_count() or 1)

SPARK = """
import json, os
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()      # no argument: SPARK_CONF_DIR
bucket = os.environ["ATELIER_SHARED_BUCKET"]
df = spark.createDataFrame([(i, f"name-{i}") for i in range(10)], ["id", "name"])
df.write.mode("overwrite").parquet(f"s3a://{bucket}/spark/{os.environ['ATELIER_PROFILE']}")
n = spark.read.parquet(f"s3a://{bucket}/spark/{os.environ['ATELIER_PROFILE']}").count()
print(json.dumps({"master": spark.sparkContext.master, "parallelism": spark.sparkContext.defaultParallelism,
                  "count": n, "driver_host": spark.conf.get("spark.driver.host")}))
spark.stop()
"""


def test_spark_starts_sized_to_the_profile_and_writes_parquet_to_s3(stack, alice, small):
    out = json.loads(run_code(stack.url, small["url"], alice["token"], SPARK, timeout=400).strip().splitlines()[-1])
    assert out == {"master": f"local[{SMALL_CPUS}]", "parallelism": SMALL_CPUS, "count": 10,
                   "driver_host": "127.0.0.1"}
    # Spark's parquet files, read back from outside with pyarrow.
    s3 = stack.s3()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="atelier-shared", Prefix="spark/cpu-small/")["Contents"]]
    parts = [k for k in keys if k.endswith(".parquet")]
    assert parts, keys
    rows = sum(pq.read_table(io.BytesIO(s3.get_object(Bucket="atelier-shared", Key=k)["Body"].read())).num_rows
               for k in parts)
    assert rows == 10


RAY = """
import json, ray
ray.init()                                   # no argument: sized by the session's settings
@ray.remote
def square(x):
    return x * x
result = sum(ray.get([square.remote(i) for i in range(10)]))
print(json.dumps({"cpus": ray.cluster_resources().get("CPU"), "gpus": ray.cluster_resources().get("GPU", 0),
                  "result": result, "node": ray.nodes()[0]["NodeManagerAddress"]}))
ray.shutdown()
"""


def test_ray_init_runs_tasks_sized_to_the_profile(stack, alice, small):
    out = json.loads(run_code(stack.url, small["url"], alice["token"], RAY, timeout=400).strip().splitlines()[-1])
    assert out["result"] == 285 and out["cpus"] == SMALL_CPUS and out["gpus"] == 0
    assert out["node"].startswith("127.")


def test_a_larger_profile_gets_larger_spark_and_ray(stack, alice):
    model = stack.spawn("alice", "cpu-large", server="svc-large")
    try:
        code = ("from pyspark.sql import SparkSession; import json; s = SparkSession.builder.getOrCreate(); "
                "print(json.dumps({'master': s.sparkContext.master, 'memory': s.conf.get('spark.driver.memory')})); "
                "s.stop()")
        out = json.loads(run_code(stack.url, model["url"], alice["token"], code, timeout=400).strip().splitlines()[-1])
        assert out == {"master": f"local[{LARGE_CPUS}]", "memory": f"{16 * 10**9 // 2**20 // 2}m"}
        ray = json.loads(run_code(stack.url, model["url"], alice["token"], RAY, timeout=400).strip().splitlines()[-1])
        assert ray["cpus"] == LARGE_CPUS
    finally:
        stack.stop_server("alice", "svc-large")


def test_mlflow_at_an_address_where_nothing_answers_fails_in_seconds_naming_it(stack, alice, small):
    """MLflow's client in a session retries a bounded number of times (the session's
    MLFLOW_HTTP_REQUEST_MAX_RETRIES): an address where nothing listens fails in seconds,
    naming it. (A real S3 server taken down, for boto3 and s3a: the fault tests.)"""
    from stack import free_port

    port = free_port()  # nothing listens there
    code = f"""
import json, time, mlflow
mlflow.set_tracking_uri("http://127.0.0.1:{port}")
t = time.monotonic()
try:
    mlflow.search_experiments(); error = ""
except Exception as exc:
    error = str(exc)
print(json.dumps({{"s": time.monotonic() - t, "error": error}}))
"""
    out = json.loads(run_code(stack.url, small["url"], alice["token"], code, timeout=120).strip().splitlines()[-1])
    # MLflow's defaults (7 retries, back-off factor 2) take minutes; 3 retries take seconds.
    assert out["error"] and f"127.0.0.1:{port}" in out["error"] and out["s"] < 20, out

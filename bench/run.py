"""`make bench`: every benchmark, each printing its figures against a baseline run side by side."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
failed = []
for script in ["bench_start.py", "bench_spawn.py", "bench_repro.py", "bench_login_flood.py",
               "bench_mlflow_upload.py", "bench_home.py", "bench_jobs.py", "bench_ray.py", "bench_chart.py",
               "bench_form.py"]:
    print(f"\n=== {script} ===", flush=True)
    if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
        failed.append(script)
if failed:
    sys.exit(f"benchmarks failed: {', '.join(failed)}")

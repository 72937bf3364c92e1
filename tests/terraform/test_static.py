"""terraform fmt, tflint and checkov on terraform/, each shown to fail on a bad module.

These read the code only (no provider needed), so they cover every module, those
that use AWS, Helm and Kubernetes included. `terraform validate` and `plan` need the
providers: they run where the registry is reachable (see docs/admin-guide.md).
"""

from __future__ import annotations

import json
import re

import pytest
from tf_run import MODULES, REPO, TERRAFORM, run, tf_env

TFLINT_CONFIG = TERRAFORM / ".tflint.hcl"
SKIP = re.compile(r"#\s*checkov:skip=(?P<id>CKV\w+)(?P<reason>.*)")

BAD_MODULE = {
    "versions.tf": 'terraform {\n  required_version = ">= 1.5.7"\n  required_providers {\n'
                   '    aws = { source = "hashicorp/aws", version = ">= 6.0" }\n  }\n}\n',
    "variables.tf": 'variable "unused" {\n  type = string\n}\n',
    "outputs.tf": "",
    "main.tf": 'resource "aws_s3_bucket" "this" {\n  bucket="wide-open"\n}\n\n'
               'resource "aws_s3_bucket_acl" "this" {\n  bucket = aws_s3_bucket.this.id\n  acl    = "public-read"\n}\n',
}


@pytest.fixture
def bad_module(tmp_path):
    for name, text in BAD_MODULE.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_terraform_fmt(terraform_bin, tmp_path):
    (tmp_path / "terraformrc").write_text("")
    done = run([terraform_bin, "fmt", "-check", "-recursive", "-diff", "-no-color", TERRAFORM], cwd=REPO,
               env=tf_env(tmp_path))
    assert done.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{done.stdout}{done.stderr}"


def test_terraform_fmt_catches_a_badly_formatted_file(terraform_bin, bad_module):
    done = run([terraform_bin, "fmt", "-check", "-recursive", "-no-color", bad_module], cwd=bad_module,
               env=tf_env(bad_module))
    assert done.returncode == 3 and "main.tf" in done.stdout


def test_every_module_has_the_standard_files():
    assert len(MODULES) >= 8, MODULES
    for module in MODULES:
        missing = [f for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
                   if not (module / f).exists()]
        assert not missing, f"{module.relative_to(REPO)} lacks {', '.join(missing)}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: str(m.relative_to(TERRAFORM)))
def test_readme_documents_every_input_and_output(module):
    readme = (module / "README.md").read_text()
    names = [f"`{m[2]}`" for f in ("variables.tf", "outputs.tf")
             for m in re.finditer(r'^(variable|output) "([^"]+)"', (module / f).read_text(), re.M)]
    assert names and [n for n in names if n not in readme] == [], f"document them in {module / 'README.md'}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: str(m.relative_to(TERRAFORM)))
def test_tflint(tflint_bin, module):
    done = run([tflint_bin, f"--chdir={module}", f"--config={TFLINT_CONFIG}", "--format=compact", "--no-color"],
               cwd=REPO)
    assert done.returncode == 0, f"tflint found problems in {module.relative_to(REPO)}:\n{done.stdout}{done.stderr}"


def test_tflint_catches_an_untyped_unused_variable(tflint_bin, bad_module):
    done = run([tflint_bin, f"--chdir={bad_module}", f"--config={TFLINT_CONFIG}", "--format=compact", "--no-color"],
               cwd=REPO)
    assert done.returncode != 0
    for rule in ("terraform_unused_declarations", "terraform_documented_variables"):
        assert rule in done.stdout, done.stdout


def checkov(checkov_bin, directory, tmp_path) -> dict:
    # Not --quiet: it drops the passed and skipped checks from the JSON report.
    done = run([checkov_bin, "--directory", directory, "--framework", "terraform", "--skip-download",
                "--compact", "--output", "json"], cwd=tmp_path,
               env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}, timeout=900)
    assert done.stdout.strip(), f"checkov printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def checkov_report(checkov_bin, tmp_path_factory):
    return checkov(checkov_bin, TERRAFORM, tmp_path_factory.mktemp("checkov"))


def test_checkov_no_failed_check(checkov_report):
    results = checkov_report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
              for c in results["failed_checks"]]
    assert failed == [], "fix these, or skip one with `# checkov:skip=ID: reason` in its block:\n" + "\n".join(failed)
    assert len(results["passed_checks"]) > 100


def test_every_checkov_skip_says_why(checkov_report):
    skips = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = SKIP.search(line)
                assert m, f"{path.relative_to(REPO)}: malformed skip {line.strip()!r}"
                reason = m["reason"].lstrip(": ").strip()
                assert len(reason.split()) >= 5, f"{path.relative_to(REPO)}: skip {m['id']} needs its reason"
                skips.append(m["id"])
    skipped = checkov_report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == set(skips)
    assert all(c["check_result"].get("suppress_comment") for c in skipped)


def test_checkov_catches_a_public_bucket(checkov_bin, bad_module, tmp_path):
    failed = {c["check_id"] for c in checkov(checkov_bin, bad_module, tmp_path)["results"]["failed_checks"]}
    assert {"CKV_AWS_20", "CKV2_AWS_6"} <= failed, failed  # public-read ACL; no public access block

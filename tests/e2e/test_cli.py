"""The `triage` command as a data team runs it: simulate a week, then check it before it lands."""

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl

TRIAGE = str(Path(sys.executable).parent / "triage")


def run(*args: str, env_home: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRIAGE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "TRIAGE_HOME": str(env_home),
            "TRIAGE_PSEUDONYM_KEY": "cli-test-key",
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        },
    )


def test_help_explains_every_command(tmp_path):
    out = run("--help", env_home=tmp_path)
    assert out.returncode == 0
    for command in ("simulate", "validate", "serve", "pipeline"):
        assert command in out.stdout


def test_simulate_then_validate_accounts_for_every_row(tmp_path):
    sim = run(
        "simulate",
        "--patients",
        "400",
        "--weeks",
        "2",
        "--seed",
        "3",
        "--defect-rate",
        "0.1",
        "--out",
        str(tmp_path / "landing"),
        env_home=tmp_path,
    )
    assert sim.returncode == 0, sim.stderr
    files = sorted((tmp_path / "landing").glob("records_*.txt"))
    assert [f.name for f in files] == ["records_2026-01-05.txt", "records_2026-01-12.txt"]

    out = run("validate", str(files[0]), "--out", str(tmp_path / "checked"), env_home=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    valid = pl.read_parquet(tmp_path / "checked" / "valid.parquet")
    quarantine = pl.read_parquet(tmp_path / "checked" / "quarantine.parquet")
    rows = len(files[0].read_text().splitlines()) - 1
    assert summary["rows"] == rows == valid.height + quarantine.height
    assert summary["quarantined"] == quarantine.height > 0
    assert quarantine["reasons"].list.len().min() >= 1
    assert "patient_id" not in valid.columns and "patient_id" not in quarantine.columns


def test_validate_refuses_an_unreadable_file_with_a_clear_message(tmp_path):
    missing = run(
        "validate", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), env_home=tmp_path
    )
    assert missing.returncode == 2
    assert "nope.txt" in missing.stderr
    headerless = tmp_path / "records_2026-01-05.txt"
    headerless.write_text("a,b,c\n1,2,3\n")
    bad = run("validate", str(headerless), "--out", str(tmp_path / "o"), env_home=tmp_path)
    assert bad.returncode == 2
    assert "patient_id" in bad.stderr  # names the missing columns


def test_a_usage_error_exits_2_and_says_what_is_wrong(tmp_path):
    out = run("pipeline", "--max-quarantine-rate", "1.5", env_home=tmp_path)
    assert out.returncode == 2
    assert "--max-quarantine-rate" in out.stderr and "between 0 and 1" in out.stderr
    assert run("no-such-command", env_home=tmp_path).returncode == 2


def test_version_names_the_package_and_the_commit(tmp_path):
    out = run("--version", env_home=tmp_path)
    assert out.returncode == 0
    assert re.fullmatch(
        r"triage \d+\.\d+\.\d+\S* \(commit ([0-9a-f]{7,40}|unknown)\)\n", out.stdout
    )


def test_a_configuration_error_is_one_line_without_a_traceback(tmp_path):
    prediction_id = "0123456789abcdef0123456789abcdef"
    env = {"TRIAGE_ENV": "nowhere"}
    out = run("trace", prediction_id, env_home=tmp_path, extra_env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "TRIAGE_ENV" in out.stderr and "nowhere" in out.stderr
    assert out.stderr.splitlines()[0].startswith("triage trace: configuration error:")
    debug = run("--debug", "trace", prediction_id, env_home=tmp_path, extra_env=env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ConfigurationError" in debug.stderr


def test_help_shows_defaults_exit_codes_and_examples(tmp_path):
    top = run("--help", env_home=tmp_path).stdout
    assert "exit codes:" in top and "examples:" in top
    assert "3  triage pipeline: the quality gate refused" in top
    simulate = run("simulate", "--help", env_home=tmp_path).stdout
    assert "(default: 2000)" in simulate and "(default: 0.03)" in simulate
    pipeline = run("pipeline", "--help", env_home=tmp_path).stdout
    assert "--max-quarantine-rate" in pipeline and "(default: None)" in pipeline


def test_pipeline_stops_before_training_with_exit_4_on_too_much_quarantine(tmp_path):
    """A week with many defective rows: validation runs (its steps printed as they go), then the
    pipeline refuses to train on it."""
    landing = tmp_path / "landing"
    sim = run(
        "simulate", "--patients", "300", "--weeks", "1", "--defect-rate", "0.3",
        "--out", str(landing), env_home=tmp_path,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    out = run("pipeline", "--no-seed", "--max-quarantine-rate", "0.05", env_home=tmp_path)
    assert out.returncode == 4, out.stderr
    assert re.search(r"\[\s*[\d.]+ s\] validated_patient_records: started", out.stdout)
    assert re.search(r"\[\s*[\d.]+ s\] validated_patient_records: done", out.stdout)
    rate = re.search(r"week 2026-01-05: ([\d.]+)% of its rows in quarantine", out.stderr)
    assert rate and float(rate.group(1)) > 5.0
    assert "nothing trained" in out.stderr
    assert not (tmp_path / "deployments" / "current.json").exists()
    # a second run refuses the same week again without re-validating it
    again = run("pipeline", "--no-seed", "--max-quarantine-rate", "0.05", env_home=tmp_path)
    assert again.returncode == 4, again.stderr
    assert "unchanged since its last validation, skipped" in again.stdout

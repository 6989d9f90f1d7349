"""The `triage` command as a data team runs it: simulate a week, then check it before it lands."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

TRIAGE = str(Path(sys.executable).parent / "triage")


def run(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRIAGE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "TRIAGE_HOME": str(env_home),
            "TRIAGE_PSEUDONYM_KEY": "cli-test-key",
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

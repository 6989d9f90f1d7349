"""Restarts without waste (orchestration.reuse): `triage pipeline` keeps the current deployment
when code, data, labels, settings and the HPO release are those it was trained on, and trains when
any of them changed, when --retrain is given, or when something cannot be determined.

Digest functions are checked on small folders; the decision on one copy of the shared deployed
home (copied once for this module), each case making one change and undoing it; one real
`run_pipeline` proves the reuse path prints its line and starts no run.
"""

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from orchestration import reuse
from orchestration.resources import INPUTS_KEY, INPUTS_TAG

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ digests
def _tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_the_code_digest_follows_contents_not_times_or_caches(tmp_path):
    _tree(
        tmp_path,
        {
            "diagnosis/a.py": b"A = 1\n",
            "diagnosis/data/table.csv": b"x,y\n1,2\n",
            "orchestration/pipeline.py": b"RUN = True\n",
            "orchestration/run_local.sh": b"echo ui\n",
            "orchestration/deploy/Dockerfile.api": b"FROM python\n",
        },
    )
    packages = ("diagnosis", "orchestration")
    before = reuse.code_digest(tmp_path, packages)
    for path in tmp_path.rglob("*"):  # a fresh clone: every time different, contents the same
        os.utime(path, (1, 1))
    _tree(tmp_path, {"diagnosis/__pycache__/a.cpython-311.pyc": b"\x00"})
    assert reuse.code_digest(tmp_path, packages) == before
    # the local launcher and the container files do not determine a model
    _tree(tmp_path, {"orchestration/run_local.sh": b"echo api\n"})
    _tree(tmp_path, {"orchestration/deploy/Dockerfile.api": b"FROM python:3.12\n"})
    assert reuse.code_digest(tmp_path, packages) == before
    _tree(tmp_path, {"diagnosis/data/table.csv": b"x,y\n1,3\n"})  # a data file of the code
    changed = reuse.code_digest(tmp_path, packages)
    assert changed != before
    _tree(tmp_path, {"orchestration/new_setting.py": b"SEED = 8\n"})  # a new file
    assert reuse.code_digest(tmp_path, packages) not in {before, changed}
    with pytest.raises(reuse.UndeterminedError, match="no package folder"):
        reuse.code_digest(tmp_path, ("diagnosis", "schemas"))


def test_the_code_digest_covers_the_real_packages():
    digest = reuse.code_digest(reuse.code_root())
    assert reuse.code_root() == REPO  # this checkout's packages, not an installed copy
    assert len(digest) == 64 and digest == reuse.code_digest(REPO)


def test_export_and_label_digests_change_with_the_files_that_reach_training(tmp_path):
    landing, labels, predictions = (tmp_path / n for n in ("landing", "labels", "predictions"))
    _tree(landing, {"records_2026-01-05.txt": b"id,age\n1,40\n"})
    exports = {"2026-01-05": landing / "records_2026-01-05.txt"}
    first = reuse.exports_digest(exports)
    _tree(landing, {"records_2026-01-05.txt": b"id,age\n1,41\n"})  # same name, one byte
    assert reuse.exports_digest(exports) != first
    _tree(landing, {"records_2026-01-12.txt": b"id,age\n2,50\n"})
    exports["2026-01-12"] = landing / "records_2026-01-12.txt"
    assert len({first, reuse.exports_digest(exports)}) == 2

    labelled, other = "a" * 32, "b" * 32
    log = predictions / "predictions-2026-05-20.jsonl"
    _tree(predictions, {log.name: f'{{"prediction_id":"{other}","x":1}}\n'.encode()})
    empty = reuse.labels_digest(labels, predictions)  # no labels folder yet
    label = json.dumps({"prediction_id": labelled, "diagnosis": "NONE"}).encode()
    _tree(labels, {f"{labelled}.json": label})
    one = reuse.labels_digest(labels, predictions)
    assert one != empty
    _tree(labels, {f".{labelled}.json.tmp": b"{half"})  # a writer's temporary file
    assert reuse.labels_digest(labels, predictions) == one
    with log.open("ab") as handle:  # a prediction nobody labelled: training is the same
        handle.write(f'{{"prediction_id":"{"c" * 32}","x":2}}\n'.encode())
    assert reuse.labels_digest(labels, predictions) == one
    with log.open("ab") as handle:  # the labelled prediction reaches the log: it now joins
        handle.write(f'{{"prediction_id":"{labelled}","x":3}}\n'.encode())
    joined = reuse.labels_digest(labels, predictions)
    assert joined != one
    _tree(labels, {f"revisions/{labelled}.2.json": label.replace(b"NONE", b"ORPHA:558")})
    assert reuse.labels_digest(labels, predictions) not in {empty, one, joined}


def test_compare_names_what_changed_and_refuses_what_it_cannot_read():
    parts = {name: f"{name}-digest" for name in reuse.PART_NAMES}
    inputs = reuse.Inputs(parts)
    assert reuse.compare(inputs, inputs.record()) is None
    assert "records no input digests" in reuse.compare(inputs, None)
    assert "records no input digests" in reuse.compare(inputs, {"fingerprint": "x"})
    assert "format" in reuse.compare(inputs, {**inputs.record(), "format": reuse.FORMAT + 1})
    older = {**inputs.record(), "parts": {**parts, "knowledge": "old", "labels": "old"}}
    assert (
        reuse.compare(inputs, older)
        == "changed since it was trained: clinician labels, HPO release"
    )
    fewer = {**inputs.record(), "parts": {k: v for k, v in parts.items() if k != "settings"}}
    assert reuse.compare(inputs, fewer) == "changed since it was trained: settings"


def test_retrain_is_an_option_of_the_command_and_of_make():
    from orchestration.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["pipeline", "--retrain"]).retrain is True
    assert parser.parse_args(["pipeline"]).retrain is False
    if shutil.which("make") is None:
        pytest.skip("make is not installed here; the Makefile lines are not checked")
    env = {**os.environ, "RETRAIN": ""}

    def planned(*args: str) -> str:
        out = subprocess.run(
            ["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if "triage pipeline" in line)

    assert planned("pipeline", "RETRAIN=1").endswith("--retrain")
    assert planned("run", "RETRAIN=1").endswith("--retrain")
    assert not planned("pipeline").endswith("--retrain")
    assert not planned("pipeline", "RETRAIN=0").endswith("--retrain")


# ------------------------------------------------------------------------------ a deployed home
@pytest.fixture(scope="module")
def home(deployed_home, tmp_path_factory):
    """One copy of the shared deployed home for this module, TRIAGE_HOME/DAGSTER_HOME on it.
    Its deployment was trained before any label existed; the labels and predictions other tests
    of the session add to the shared home afterwards (through the API) are left out of the copy,
    so the copy is the home as that deployment was trained on."""
    copy = tmp_path_factory.mktemp("reuse") / "home"
    shutil.copytree(
        deployed_home, copy, symlinks=True, ignore=shutil.ignore_patterns("labels", "predictions")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIAGE_HOME", str(copy))
        mp.setenv("DAGSTER_HOME", str(copy / "dagster"))
        mp.delenv("TRIAGE_MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("TRIAGE_S3_BUCKET", raising=False)
        yield copy


def _current(home: Path) -> tuple[str, dict]:
    pointer = json.loads((home / "deployments" / "current.json").read_text())
    return pointer["version"], json.loads((home / "deployments" / pointer["manifest"]).read_text())


def _decide(home: Path, resources=None, **kwargs) -> reuse.Decision:
    from orchestration.definitions import defs
    from orchestration.resources import TriageStorage, existing_tracking_uri
    from schemas.layout import TriagePaths

    paths = TriagePaths(home)
    kwargs.setdefault("tracking_uri", existing_tracking_uri(paths))
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return reuse.decide(
            TriageStorage(home=str(home)),
            instance,
            resources or defs.resources,
            "triage-diagnosis",
            **kwargs,
        )


def test_the_deployment_records_the_digests_its_training_run_carried(home):
    version, manifest = _current(home)
    recorded = manifest["data_versions"][INPUTS_KEY]
    assert set(recorded["parts"]) == set(reuse.PART_NAMES)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        run = instance.get_run_by_id(manifest["dagster_run_id"])
    assert json.loads(run.tags[INPUTS_TAG]) == recorded  # visible on the run in the Dagster UI
    decision = _decide(home)
    assert decision.reuse, decision.reason
    assert decision.version == version and decision.inputs.record() == recorded


def _rows(home: Path, sql: str) -> int:
    with sqlite3.connect(home / "mlflow" / "mlflow.db") as connection:
        return connection.execute(sql).fetchone()[0]


def test_an_unchanged_home_keeps_its_deployment_and_starts_no_run(home, capsys):
    from orchestration.pipeline import run_pipeline

    version, manifest = _current(home)
    folders = sorted(p.name for p in (home / "deployments").iterdir())
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = len(instance.get_runs())
    registered = _rows(home, "SELECT COUNT(*) FROM model_versions")
    mlflow_runs = _rows(home, "SELECT COUNT(*) FROM runs")

    assert run_pipeline(seed_demo=False) == 0
    out = capsys.readouterr().out
    kept = [line for line in out.splitlines() if line.startswith("kept deployment")]
    assert len(kept) == 1, out
    assert kept[0].startswith(f"kept deployment {version}: ")
    assert f"version {manifest['mlflow_model_version']}" in kept[0] and "--retrain" in kept[0]
    assert "training:" not in out
    assert _current(home)[0] == version
    assert sorted(p.name for p in (home / "deployments").iterdir()) == folders
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert len(instance.get_runs()) == runs  # no observation, no training run
    assert _rows(home, "SELECT COUNT(*) FROM model_versions") == registered
    assert _rows(home, "SELECT COUNT(*) FROM runs") == mlflow_runs


def _append(path: Path, data: bytes):
    original = path.read_bytes()
    path.write_bytes(original + data)
    return lambda: path.write_bytes(original)


def _add(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.unlink


def _hide(path: Path):
    hidden = path.with_name(path.name + ".away")
    path.rename(hidden)
    return lambda: hidden.rename(path)


def _changed_export(home):
    return _append(sorted((home / "landing").glob("records_*.txt"))[0], b"\n")


def _new_label(home):
    label = {"prediction_id": "f" * 32, "diagnosis": "NONE", "severity": "not_ill"}
    return _add(home / "labels" / f"{'f' * 32}.json", json.dumps(label).encode())


def _new_hpo_release(home):
    from diagnosis.hpo import HPOA_FILE, OBO_FILE, locate_hpo_files

    packaged, _ = locate_hpo_files(None)
    target = home / "knowledge" / "hpo"
    target.mkdir(parents=True)
    shutil.copyfile(packaged / OBO_FILE, target / OBO_FILE)
    shutil.copyfile(packaged / HPOA_FILE, target / HPOA_FILE)
    with (target / HPOA_FILE).open("ab") as handle:
        handle.write(b"#a later release\n")
    return lambda: shutil.rmtree(home / "knowledge")


def _changed_code(home, monkeypatch):
    copy = home.parent / "code"
    for package in reuse.CODE_PACKAGES:
        shutil.copytree(
            REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    with (copy / "diagnosis" / "features.py").open("a") as handle:
        handle.write("# one more line\n")
    monkeypatch.setattr(reuse, "code_root", lambda: copy)

    def undo():
        monkeypatch.undo()
        shutil.rmtree(copy)

    return undo


def _no_manifest(home):
    version, _ = _current(home)
    return _hide(home / "deployments" / version / "manifest.json")


def _no_deployment(home):
    return _hide(home / "deployments" / "current.json")


def _tampered_model(home):
    version, _ = _current(home)
    return _append(home / "deployments" / version / "model.onnx", b"\0")


CHANGES = {
    "changed export": (_changed_export, "changed since it was trained: weekly exports"),
    "new label": (_new_label, "changed since it was trained: clinician labels"),
    "new HPO release": (_new_hpo_release, "changed since it was trained: HPO release"),
    "changed code": (_changed_code, "changed since it was trained: code"),
    "missing manifest": (_no_manifest, "which has no manifest"),
    "nothing deployed": (_no_deployment, "nothing deployed yet"),
    "tampered model file": (_tampered_model, "does not match the SHA-256 in its manifest"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_means_a_full_run_that_says_why(home, monkeypatch, change):
    make, expected = CHANGES[change]
    undo = make(home, monkeypatch) if change == "changed code" else make(home)
    try:
        decision = _decide(home)
    finally:
        undo()
    assert not decision.reuse
    assert expected in decision.reason
    assert decision.line().startswith("training: full run: ")
    assert _decide(home).reuse  # undone: the deployment is kept again


def test_settings_retrain_a_validated_week_and_a_missing_registry_mean_a_full_run(home):
    from orchestration.definitions import defs
    from orchestration.resources import ModelPolicy

    seeded = {**defs.resources, "policy": ModelPolicy(random_seed=8)}
    assert "changed since it was trained: settings" in _decide(home, seeded).reason
    assert _decide(home, retrain=True).reason == "full run: --retrain given"
    week = _decide(home, validated_now=["2026-03-23"])
    assert "week(s) 2026-03-23 validated in this run" in week.reason
    assert "no MLflow tracking store" in _decide(home, tracking_uri=None).reason
    # an unreadable part is a full run that names it
    unreadable = {k: v for k, v in defs.resources.items() if k != "policy"}
    decision = _decide(home, unreadable)
    assert not decision.reuse and "settings of the 'policy' resource" in decision.reason
    assert decision.inputs is None  # nothing recorded: the next run trains too

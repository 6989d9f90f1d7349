import json

import pytest

from assets.deployment import read_current, write_deployment


def manifest(version: str) -> dict:
    return {"version": version, "onnx_file": "model.onnx", "onnx_sha256": "x"}


def test_deployment_is_versioned_and_pointer_follows_the_newest(tmp_path):
    write_deployment(tmp_path, manifest("v1"), b"one")
    write_deployment(tmp_path, manifest("v2"), b"two")
    assert read_current(tmp_path) == {"version": "v2", "manifest": "v2/manifest.json"}
    assert (tmp_path / "v1" / "model.onnx").read_bytes() == b"one"
    assert json.loads((tmp_path / "v2" / "manifest.json").read_text())["version"] == "v2"
    # no staging directories or temp files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json", "v1", "v2"]


def test_an_existing_version_is_never_rewritten(tmp_path):
    write_deployment(tmp_path, manifest("v1"), b"one")
    with pytest.raises(FileExistsError):
        write_deployment(tmp_path, manifest("v1"), b"other")
    assert (tmp_path / "v1" / "model.onnx").read_bytes() == b"one"
    assert read_current(tmp_path)["version"] == "v1"


def test_no_pointer_before_the_first_deployment(tmp_path):
    assert read_current(tmp_path) is None

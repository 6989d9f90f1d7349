"""The S3 mirror (diagnosis.remote) and the environment split (orchestration.settings), on moto's
in-process S3."""

import json

import boto3
import pytest
from moto import mock_aws

from diagnosis.remote import LogShipper, RemoteStore, S3Location
from orchestration.settings import ConfigurationError, current_environment

BUCKET = "unit-bucket"


@pytest.fixture
def remote(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield RemoteStore(S3Location(BUCKET, "net"), client)


def test_push_then_pull_transfers_only_what_changed(remote, tmp_path):
    source, mirror = tmp_path / "a", tmp_path / "b"
    (source / "sub").mkdir(parents=True)
    (source / "one.txt").write_text("1")
    (source / "sub" / "two.txt").write_text("2")
    (source / ".hidden.tmp").write_text("a writer's temporary file")
    assert remote.push("landing", source) == ["one.txt", "sub/two.txt"]
    assert remote.push("landing", source) == []  # same MD5: nothing uploaded again
    assert sorted(remote.pull("landing", mirror)) == ["one.txt", "sub/two.txt"]
    assert remote.pull("landing", mirror) == []
    (source / "one.txt").write_text("changed")
    assert remote.push("landing", source) == ["one.txt"]
    assert remote.pull("landing", mirror) == ["one.txt"]
    assert (mirror / "one.txt").read_text() == "changed"
    assert remote.pull("landing", tmp_path / "c", under="sub/") == ["sub/two.txt"]


def test_missing_object_reads_as_none_and_unknown_area_is_refused(remote):
    assert remote.get_bytes("deployments", "current.json") is None
    with pytest.raises(ValueError, match="unknown area"):
        remote.key("secrets", "x")


def test_deployment_pointer_is_published_last_and_mirrored_whole(remote, tmp_path):
    source, mirror = tmp_path / "deployments", tmp_path / "mirror"
    (source / "v1").mkdir(parents=True)
    (source / "v1" / "manifest.json").write_text('{"version": "v1"}')
    (source / "v1" / "model.onnx").write_bytes(b"\x08\x01")
    (source / "current.json").write_text(
        json.dumps({"version": "v1", "manifest": "v1/manifest.json"})
    )
    assert remote.pull_deployment(mirror) is False  # nothing deployed yet
    remote.publish_deployment(source, "v1")
    assert remote.pull_deployment(mirror) is True
    assert (mirror / "v1" / "model.onnx").read_bytes() == b"\x08\x01"
    assert json.loads((mirror / "current.json").read_text())["version"] == "v1"
    assert remote.pull_deployment(mirror) is False  # unchanged pointer: nothing to do


def test_pointer_naming_an_unsafe_version_is_refused(remote, tmp_path):
    from diagnosis.remote import RemoteError

    remote.put_bytes("deployments", "current.json", b'{"version": "../../etc"}')
    with pytest.raises(RemoteError, match="unsafe version"):
        remote.pull_deployment(tmp_path)
    assert not (tmp_path / "current.json").exists()


def test_prediction_log_segments_reassemble_each_day(remote, tmp_path):
    local = tmp_path / "predictions"
    local.mkdir()
    day_file = local / "predictions-2026-11-24.jsonl"
    day_file.write_bytes(b'{"prediction_id":"a"}\n{"prediction_id":"b"}\n{"partial')
    shipper = LogShipper(remote, local)
    assert shipper.ship() == 1  # complete lines only
    assert shipper.ship() == 0
    with day_file.open("ab") as handle:
        handle.write(b'":1}\n')
    assert shipper.ship() == 1
    names = sorted(remote.list("predictions"))
    assert len(names) == 2 and all(n.startswith("2026-11-24/") for n in names)
    mirror = tmp_path / "mirror"
    assert remote.pull("predictions", mirror) == ["predictions-2026-11-24.jsonl"]
    assert (mirror / "predictions-2026-11-24.jsonl").read_bytes() == day_file.read_bytes()


def test_environment_split():
    assert current_environment({}).name == "local"
    assert current_environment({}).s3_location({}) is None
    prod = current_environment({"DAGSTER_CLOUD_DEPLOYMENT_NAME": "prod"})
    assert prod.name == "prod" and prod.model_name == "triage-diagnosis"
    with pytest.raises(ConfigurationError, match="TRIAGE_S3_BUCKET"):
        prod.s3_location({})
    branch = current_environment(
        {
            "DAGSTER_CLOUD_DEPLOYMENT_NAME": "feature-x",
            "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT": "1",
            "DAGSTER_CLOUD_GIT_BRANCH": "Feature/New Model",
        }
    )
    assert branch.name == "branch" and branch.branch == "feature-new-model"
    assert branch.model_name == "triage-diagnosis-feature-new-model"
    location = branch.s3_location({"TRIAGE_S3_BUCKET": "b", "TRIAGE_S3_PREFIX": "net"})
    assert location.prefix == "net/branches/feature-new-model"
    with pytest.raises(ConfigurationError, match="TRIAGE_ENV"):
        current_environment({"TRIAGE_ENV": "staging"})


def test_shared_environments_need_the_pseudonym_key(monkeypatch, tmp_path):
    from orchestration.settings import pseudonym_key

    monkeypatch.delenv("TRIAGE_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("TRIAGE_ENV", "prod")
    with pytest.raises(ConfigurationError, match="TRIAGE_PSEUDONYM_KEY"):
        pseudonym_key(tmp_path)
    assert not (tmp_path / "secrets").exists()  # no key generated behind the operator's back

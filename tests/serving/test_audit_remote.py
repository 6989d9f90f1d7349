"""Rollback with the shared S3 store (moto): the CLI host re-points the shared pointer to a
version it did not have locally, and every API host's mirror follows."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from diagnosis import artifacts, audit
from diagnosis.remote import RemoteStore, S3Location
from tests.serving.conftest import write_deployment


@pytest.fixture
def remote(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="audit-bucket")
        yield RemoteStore(S3Location("audit-bucket", "triage"), client)


def test_rollback_repoints_the_shared_pointer_and_records_it(remote, built_model, tmp_path):
    pipeline, api, operator = (tmp_path / name for name in ("pipeline", "api", "operator"))
    for version in ("2026-01-05-a", "2026-01-12-b"):  # the pipeline deploys a, then b
        write_deployment(pipeline, built_model, version)
        remote.publish_deployment(pipeline / "deployments", version)
    assert remote.pull_deployment(api / "deployments")
    assert artifacts.read_current(api / "deployments").version == "2026-01-12-b"

    # the operator's host has no deployment at all: the version comes from S3, is checked, served
    result = audit.repoint(operator / "deployments", "2026-01-05-a", remote)
    assert result == "published"
    record = audit.RollbackRecord(
        at=audit.now_utc(),
        by="ana",
        reason="b regressed",
        from_version="2026-01-12-b",
        to_version="2026-01-05-a",
        s3_pointer=result,
    )
    audit.write_rollback_record(operator / "deployments", record, remote)

    assert remote.pull_deployment(api / "deployments")  # what the API's follower does
    assert artifacts.read_current(api / "deployments").version == "2026-01-05-a"
    remote.pull("deployments", api / "deployments", under=f"{audit.AUDIT_FOLDER}/")
    (shared,) = audit.rollback_records(api / "deployments")
    assert (shared.by, shared.reason, shared.to_version) == ("ana", "b regressed", "2026-01-05-a")
    # a version the store does not hold is refused, and the shared pointer does not move
    with pytest.raises(audit.AuditError, match="no deployment"):
        audit.repoint(operator / "deployments", "2026-02-01-x", remote)
    assert not remote.pull_deployment(api / "deployments")

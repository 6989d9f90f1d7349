"""One messy weekly export as a Dagster partition: routing, checks, metadata, idempotence."""

import pickle

import dagster as dg
import pytest

from assets import ingestion, validation
from orchestration.resources import QualityPolicy, TriageStorage

WEEK = "2026-02-02"
HEADER = "\ufeffpatient_id\tRecorded_At\tage\tsex\theart_rate\tbody_temperature\tsystolic_bp\tdiastolic_bp\tsymptoms\tdiagnosis\tseverity"
ROWS = [
    # valid, Spanish labels, °F temperature (converted)
    "H0000001\t2026-02-02T08:00:00\t34\tfemenino\t88\t101.3\t120\t80\tHP:0001945;HP:0012735\tJ10\taguda",
    # valid, missing vitals allowed
    "H0000002\t2026-02-02T09:00:00\t70\tM\t\t\t\t\t\tNONE\tNo enfermo",
    # letters in a number, impossible vital
    "H0000003\t2026-02-03T10:00:00\t5O\tmale\t400\t37.0\t120\t80\t\tJ10\tleve",
    # diastolic >= systolic, bad HPO id, missing diagnosis
    "H0000004\t2026-02-03T11:00:00\t40\tfemale\t80\t37.0\t90\t95\tHP:12\t\tcrónica",
    # exact duplicate of the first row
    "H0000001\t2026-02-02T08:00:00\t34\tfemenino\t88\t101.3\t120\t80\tHP:0001945;HP:0012735\tJ10\taguda",
]


@pytest.fixture
def home(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / f"records_{WEEK}.txt").write_bytes(
        ("\r\n".join([HEADER, *ROWS]) + "\r\n").encode("utf-8")
    )
    return tmp_path


def materialise(home, instance, max_rate=0.10):
    instance.add_dynamic_partitions("weekly_exports", [WEEK])
    return dg.materialize(
        [ingestion.raw_patient_records, validation.validated_patient_records],
        partition_key=WEEK,
        instance=instance,
        resources={
            "storage": TriageStorage(home=str(home)),
            "quality": QualityPolicy(max_quarantine_rate=max_rate),
            "io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),
        },
        raise_on_error=False,
    )


def test_messy_week_is_routed_row_by_row_with_checks_and_metadata(home):
    with dg.instance_for_test() as instance:
        result = materialise(home, instance)
        assert result.success
        valid = result.output_for_node("validated_patient_records", "validated_patient_records")
        quarantined = result.output_for_node(
            "validated_patient_records", "quarantined_patient_records"
        )
        assert sorted(valid["source_row"]) == [1, 2]
        assert valid.filter(valid["source_row"] == 1)["body_temperature"][0] == pytest.approx(
            38.5, abs=0.01
        )
        reasons = dict(zip(quarantined["source_row"], quarantined["reasons"].to_list()))
        assert sorted(reasons) == [3, 4, 5]
        assert any(r.startswith("age:") for r in reasons[3])
        assert any(r.startswith("heart_rate:") for r in reasons[3])
        assert {r.split(":")[0] for r in reasons[4]} >= {"diastolic_bp", "symptoms", "diagnosis"}
        assert reasons[5] == ["duplicate"]
        assert "H0000001" not in str(valid.to_dicts()) + str(quarantined.to_dicts())

        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["row_accounting"].passed and checks["schema_conformance"].passed
        # 3 of 5 rows quarantined: above the 10 % threshold, a warning (not a blocker)
        assert not checks["quarantine_rate"].passed
        assert checks["quarantine_rate"].severity == dg.AssetCheckSeverity.WARN

        event = instance.get_latest_materialization_event(
            dg.AssetKey("quarantined_patient_records")
        ).asset_materialization
        assert event.partition == WEEK
        assert event.metadata["counts_by_reason"].value["duplicate"] == 1
        assert "heart_rate" in event.metadata["counts_by_column"].value
        assert "| file | row | reasons |" in event.metadata["failure_sample"].value


def test_rematerialising_a_week_is_idempotent_and_the_threshold_is_configurable(home):
    with dg.instance_for_test() as instance:
        first = materialise(home, instance, max_rate=0.9)
        stored = home / "storage" / "validated_patient_records" / WEEK
        before = stored.read_bytes()
        second = materialise(home, instance, max_rate=0.9)
        assert first.success and second.success
        assert pickle.loads(stored.read_bytes()).equals(pickle.loads(before))
        checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
        assert checks["quarantine_rate"].passed  # 60 % is under a 90 % threshold

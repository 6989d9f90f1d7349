"""What the quality gate saw is what clinicians are served.

The pipeline's `model_evaluation` scores the challenger through `diagnosis.runtime.Runtime` on the
exported artifact and keeps, for every held-out row, the top entries and probabilities it saw.
The same rows sent to `POST /v1/predict/batch` of the API serving that deployment must come back
with the same codes and the same probabilities (to 1e-6). If either the evaluation or the API
scored patients with code of its own, the two would drift apart and this test would fail.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
from litestar.testing import TestClient

from serving.app import create_app
from serving.settings import Settings

pytestmark = pytest.mark.slow

TOKEN = "clin-token-gate-equals-served"


def test_the_numbers_the_gate_saw_are_what_the_api_returns(deployed_home):
    from orchestration.definitions import defs

    with dg.DagsterInstance.from_config(str(deployed_home / "dagster")) as instance:
        evaluation = defs.load_asset_value("model_evaluation", instance=instance)
        deployed = instance.get_latest_materialization_event(dg.AssetKey("deployed_model"))
    version = deployed.asset_materialization.metadata["version"].value
    ranked = evaluation.ranked
    patients = evaluation.patients
    assert ranked is not None and len(patients) > 100
    k = len(ranked.codes[0])

    settings = Settings.from_env(
        {"TRIAGE_HOME": str(deployed_home), "TRIAGE_API_KEYS": f"clinician:{TOKEN}"}
    )
    with TestClient(app=create_app(settings)) as client:
        served = []
        for start in range(0, len(patients), 500):
            response = client.post(
                f"/v1/predict/batch?top_k={k}&explain=false",
                json={"patients": patients[start : start + 500]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 200, response.text
            served += response.json()["predictions"]

    assert {p["model_version"] for p in served} == {version}
    assert [[e["code"] for e in p["differential"]] for p in served] == ranked.codes
    np.testing.assert_allclose(
        [[e["probability"] for e in p["differential"]] for p in served],
        ranked.probabilities,
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [p["orphan_probability"] for p in served], ranked.orphan, rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        [list(p["severity"]["probabilities"].values()) for p in served],
        ranked.severity,
        rtol=0,
        atol=1e-6,
    )

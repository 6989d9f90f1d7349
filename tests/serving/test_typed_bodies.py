"""The handlers take the typed bodies they declare; what they hand on is exactly what the
full-body validators (which list every problem) accept for the same JSON."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.labels import canonical_label, validate_label_body
from serving.structs import LabelRequest, Patient, patient_input, validate_patient_body

from .conftest import COUGH, FEVER, HEADACHE, TALL

_vital = st.one_of(st.none(), st.integers(40, 90), st.floats(40, 90, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(
    age=_vital,
    heart_rate=_vital,
    body_temperature=st.one_of(st.none(), st.floats(35, 41)),
    sex=st.sampled_from([None, "female", "male", "other", "unknown"]),
    symptoms=st.one_of(
        st.none(), st.lists(st.sampled_from([FEVER, COUGH, "HP:0001250"]), max_size=6)
    ),
    absent_symptoms=st.one_of(  # disjoint from the symptoms: one id may not be in both
        st.none(), st.lists(st.sampled_from([HEADACHE, TALL]), max_size=4)
    ),
    drop=st.sets(st.sampled_from(["age", "heart_rate", "sex", "symptoms", "absent_symptoms"])),
)
def test_patient_input_is_what_the_validator_returns(
    age, heart_rate, body_temperature, sex, symptoms, absent_symptoms, drop
):
    body = {
        "age": age,
        "heart_rate": heart_rate,
        "body_temperature": body_temperature,
        "sex": sex,
        "symptoms": symptoms,
        "absent_symptoms": absent_symptoms,
        "systolic_bp": 120,
        "diastolic_bp": 80,
    }
    body = {k: v for k, v in body.items() if k not in drop}
    clean, problems = validate_patient_body(body)
    assert problems == []
    typed = msgspec.json.decode(msgspec.json.encode(body), type=Patient)
    assert patient_input(typed) == clean


def test_canonical_label_is_what_the_validator_returns():
    for body in (
        {
            "prediction_id": " 3F2B0C4E9D8A4B7C8E1F2A3B4C5D6E7F ",
            "diagnosis": "orpha:558",
            "severity": "Crónica",
        },
        {
            "prediction_id": "3f2b0c4e9d8a4b7c8e1f2a3b4c5d6e7f",
            "diagnosis": "j18.9",
            "severity": "acute",
        },
    ):
        clean, problems = validate_label_body(body)
        assert problems == []
        typed = msgspec.convert(body, LabelRequest)
        assert canonical_label(typed) == clean

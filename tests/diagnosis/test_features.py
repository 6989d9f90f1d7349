import numpy as np

from diagnosis.features import SEX_CATEGORIES, VITAL_FEATURES, FeatureSpec


def spec() -> FeatureSpec:
    return FeatureSpec(symptoms=("HP:0001945", "HP:0012735"))


def test_encode_puts_vitals_sex_and_symptoms_in_manifest_order():
    row = spec().encode(
        [
            {
                "age": 40,
                "sex": "male",
                "heart_rate": 90,
                "body_temperature": 38.5,
                "systolic_bp": 120,
                "diastolic_bp": 80,
                "symptoms": ["HP:0012735"],
            }
        ]
    )[0]
    assert row.dtype == np.float32
    assert row.tolist()[:5] == [40, 90, 38.5, 120, 80]
    assert row[5 : 5 + len(SEX_CATEGORIES)].tolist() == [0, 1, 0, 0]
    assert row[-2:].tolist() == [0, 1]


def test_missing_vitals_are_nan_and_missing_sex_is_unknown():
    row = spec().encode([{"symptoms": ["HP:9999999"]}])[0]
    assert np.isnan(row[: len(VITAL_FEATURES)]).all()
    assert row[5 + SEX_CATEGORIES.index("unknown")] == 1
    assert row[-2:].tolist() == [0, 0]  # a symptom outside the vocabulary adds nothing


def test_manifest_round_trip_and_column_encoding_agree_with_dict_encoding():
    original = spec()
    restored = FeatureSpec.from_manifest(original.to_manifest())
    assert restored == original
    patients = [
        {"age": 5, "sex": "female", "heart_rate": None, "symptoms": ["HP:0001945"]},
        {"age": 70, "sex": None, "body_temperature": 36.6, "symptoms": []},
    ]
    by_dict = restored.encode(patients)
    by_columns = restored.encode_columns(
        {
            name: np.array([p.get(name, np.nan) for p in patients], dtype=float)
            for name in VITAL_FEATURES
        },
        [p["sex"] for p in patients],
        [p["symptoms"] for p in patients],
    )
    np.testing.assert_array_equal(by_dict, by_columns)
    assert restored.names[:5] == list(VITAL_FEATURES)

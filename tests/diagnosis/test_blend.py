import numpy as np

from diagnosis.blend import BlendParams, blend, gate_features, orphan_probability
from schemas.contracts import BlendSpec, decode, encode

# classes: NONE (healthy), J10 (common), ORPHA:1 (orphan, known to the ranker), ORPHA:9 (orphan,
# absent from the ranker); the ranker knows three diseases: ORPHA:1, ORPHA:2, OMIM:3
ORPHAN = np.array([False, False, True, True])
TO_DISEASE = np.array([-1, -1, 0, -1])


def run(classifier, scores, unseen=0.0, alpha=0.3, coef=(1.0, 0.5, 2.0), intercept=-1.0):
    params = BlendParams(coef, intercept, alpha)
    return blend(
        np.array([classifier], dtype=float),
        ORPHAN,
        TO_DISEASE,
        np.array([scores], dtype=float),
        0.0,
        np.array([unseen]),
        params,
    )


def test_probabilities_sum_to_one_and_orphan_mass_moves_to_the_ranker():
    classes, diseases, p_orphan = run([0.1, 0.6, 0.2, 0.1], [2.0, 0.5, -1.0])
    assert np.isclose(classes.sum() + diseases.sum(), 1.0)
    assert np.isclose(diseases.sum() + classes[0, 3], p_orphan[0])
    assert classes[0, 2] == 0.0  # ORPHA:1 lives in the ranker's output now
    assert classes[0, 3] > 0.0  # ORPHA:9 is unknown to the ranker and keeps its learned share
    # common classes keep the classifier's proportions
    assert np.isclose(classes[0, 1] / classes[0, 0], 6.0)


def test_unseen_symptoms_and_ranker_evidence_raise_the_orphan_probability():
    base = gate_features(
        np.array([[0.7, 0.3, 0.0, 0.0]]), ORPHAN, np.array([[0.0, 0, 0]]), 0.0, np.array([0.0])
    )
    strong = gate_features(
        np.array([[0.7, 0.3, 0.0, 0.0]]), ORPHAN, np.array([[8.0, 0, 0]]), 0.0, np.array([1.0])
    )
    params = BlendParams((0.2, 0.5, 2.0), -1.0, 0.0)
    assert orphan_probability(strong, params)[0] > orphan_probability(base, params)[0] + 0.5


def test_alpha_zero_ranks_orphans_by_the_ranker_alone():
    _, diseases, _ = run([0.1, 0.1, 0.7, 0.1], [0.0, 3.0, 0.0], alpha=0.0)
    assert diseases[0].argmax() == 1
    _, mixed, _ = run([0.1, 0.1, 0.7, 0.1], [0.0, 3.0, 0.0], alpha=0.9)
    assert mixed[0].argmax() == 0  # with a high alpha the learned ORPHA:1 wins


def test_params_round_trip_through_the_manifest():
    params = BlendParams((0.1, 0.2, 0.3), -0.5, 0.25)
    stored = decode(encode(params.to_spec()), BlendSpec, "blend")
    assert BlendParams.from_spec(stored) == params

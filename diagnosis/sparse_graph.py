"""A batch of sparse queries against a sparse (term x disease) weight matrix, as one ONNX graph,
with the top-k and the softmax sums the runtime needs, so nothing per disease is left to Python.

The knowledge ranker's score of disease ``d`` for a patient is
``context[c, d] + Σ_t W[t, d]`` over the patient's query terms ``t`` (present findings, and
excluded findings as their own rows of ``W``), where ``c`` is the patient's context (age bin x
sex) and ``context[c] = bias + W[age row] + W[sex row]`` is precomputed at export: the age and sex
rows touch thousands of diseases each, the same for many patients, so they are not scattered per
request. ``W`` is stored CSR by term (``term_ptr``, ``nnz_disease``, ``nnz_weight``).

Inputs: the queries of a whole batch as two flat index lists, ``query_rows`` (which patient) and
``query_terms`` (which row of ``W``), ``query_context`` ``[n]`` (each patient's context row),
``query_k`` (how many top diseases to return), ``query_probe`` (diseases whose scores every row
reports: the runtime passes those the classifier also learned) and ``query_lead`` ``[n]`` (for
every row, the row whose top diseases it reports: itself, or for an explanation's occlusion rows
the patient as entered).

Scoring touches only the CSR segments of the queried terms: their lengths are laid end to end
(CumSum), every position is labelled with its segment (ScatterElements + CumSum), and the gathered
``(disease, weight)`` pairs are added onto the patients' context rows with one
``ScatterElements(add)`` at ``row * D + disease``. Then, per row:

* :data:`SCORES` ``[n, D]``: the log-scores (the pipeline fits the blend on them);
* :data:`TOP_SCORES`, :data:`TOP_INDEX` ``[n, k]``: ``TopK`` (ties: the lower index first);
* :data:`NORM` ``[n]`` (double): ``Σ_d exp(score_d - max)``, the softmax denominator (exp in
  float32, summed in double: every term's relative error is one float32 rounding);
* :data:`PROFILE_MIX` ``[n, J]`` (double): ``Σ_d exp(score_d - max) · profile[d]``, computed as
  ``NORM · profile_0 + Σ_{d ∈ A} exp(...) · (profile[d] - profile_0)`` over the few diseases ``A``
  whose profile differs from the most common one ``profile_0``;
* :data:`LEAD_TOP_SCORES` ``[n, k]``: every row's scores of its *lead* row's top-k diseases (an
  explanation scores its occlusion rows against the patient's differential, in the same call;
  a row that leads itself gets its :data:`TOP_SCORES`);
* :data:`PROBE_SCORES` ``[n, P]``: every row's scores of the ``query_probe`` diseases.

Cost: O(queried entries + batch x D) — the batch x D term is a few vectorised passes over the
context rows — with no Python loop and one onnxruntime call for any number of patients.

:func:`score_batch` is the numpy reference of the scores (used by tests and training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

QUERY_ROWS = "query_rows"
QUERY_TERMS = "query_terms"
QUERY_CONTEXT = "query_context"
QUERY_K = "query_k"
QUERY_PROBE = "query_probe"
QUERY_LEAD = "query_lead"
INPUTS = (QUERY_ROWS, QUERY_TERMS, QUERY_CONTEXT, QUERY_K, QUERY_PROBE, QUERY_LEAD)
SCORES = "scores"
TOP_SCORES = "top_scores"
TOP_INDEX = "top_index"
NORM = "norm"
PROFILE_MIX = "profile_mix"
LEAD_TOP_SCORES = "lead_top_scores"
PROBE_SCORES = "probe_scores"
OUTPUTS = (SCORES, TOP_SCORES, TOP_INDEX, NORM, PROFILE_MIX, LEAD_TOP_SCORES, PROBE_SCORES)


def public_name(output: str) -> str:
    """The name an output has in the served graph (``scores`` -> ``ranker_scores``)."""
    return f"ranker_{output}"


def score_batch(
    term_ptr: np.ndarray,
    nnz_disease: np.ndarray,
    nnz_weight: np.ndarray,
    bias: np.ndarray,
    rows: np.ndarray,
    terms: np.ndarray,
    count: int,
) -> np.ndarray:
    """Numpy reference: log-scores [count, D] (float32, summed in query order like the graph)."""
    scores = np.tile(bias.astype(np.float32), (count, 1))
    for row, term in zip(np.asarray(rows).tolist(), np.asarray(terms).tolist()):
        lo, hi = term_ptr[term], term_ptr[term + 1]
        scores[row, nnz_disease[lo:hi]] += nnz_weight[lo:hi]
    return scores


@dataclass(frozen=True)
class SparseScorer:
    """The graph's log-scores (:data:`SCORES`) in numpy, the same arithmetic bit for bit: each
    row starts as a copy of its context row, then every queried weight is added in float32 in
    the graph's order (rows in order, a row's terms in order, each term's CSR segment in order:
    ``np.add.at`` adds one after another, as the graph's ``ScatterElements(add)`` does).

    The runtime scores the catalogue with it and hands the scores to the rest of the graph
    (:func:`diagnosis.runtime.served_graph`): the graph's CSR walk (segment ids through CumSum
    and ScatterElements, then one Gather per hit for its start, row, disease and weight) cost
    about a quarter of a batch's onnxruntime time for what numpy's ``repeat`` and ``take`` do in
    a few vectorised passes. Built from the exported graph's own initializers
    (:meth:`from_initializers`), so it always reads the deployed weights."""

    term_start: np.ndarray  # [T] int64
    term_length: np.ndarray  # [T] int64
    nnz_disease: np.ndarray  # [NNZ] int32 (an index below D)
    nnz_weight: np.ndarray  # [NNZ] float32
    contexts: np.ndarray  # [C, D] float32

    NAMES = ("term_start", "term_length", "nnz_disease", "nnz_weight", "contexts")

    @classmethod
    def from_initializers(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> SparseScorer:
        """From the graph's initializers named ``prefix + name`` (:data:`NAMES`, as
        :func:`to_onnx` names them); ``KeyError`` when one is missing."""
        start, length, disease, weight, contexts = (arrays[prefix + n] for n in cls.NAMES)
        if not (len(start) == len(length) and len(disease) == len(weight)):
            raise KeyError("the weight matrix's arrays disagree in length")
        if len(disease) and (int(disease.max()) >= contexts.shape[1] or int(disease.min()) < 0):
            raise KeyError("a weight's disease index lies outside the context rows")
        return cls(
            np.asarray(start, dtype=np.int64),
            np.asarray(length, dtype=np.int64),
            np.asarray(disease, dtype=np.int32),
            np.asarray(weight, dtype=np.float32),
            np.ascontiguousarray(contexts, dtype=np.float32),
        )

    @property
    def n_diseases(self) -> int:
        return int(self.contexts.shape[1])

    def scores(self, queries: dict[str, np.ndarray]) -> np.ndarray:
        """[n, D] float32 log-scores of :func:`encode_queries`'s inputs."""
        out = self.contexts[queries[QUERY_CONTEXT]]
        terms = queries[QUERY_TERMS]
        if not len(terms):
            return out
        lengths = self.term_length[terms]
        ends = np.cumsum(lengths)
        total = int(ends[-1])
        if not total:
            return out
        # every queried weight's index in the CSR arrays, segment after segment
        shift = self.term_start[terms] - (ends - lengths)
        index = np.repeat(shift, lengths)
        index += np.arange(total, dtype=np.int64)
        cells = np.repeat(queries[QUERY_ROWS] * self.n_diseases, lengths)
        cells += self.nnz_disease[index]
        np.add.at(out.reshape(-1), cells, self.nnz_weight[index])
        return out


def encode_queries(
    term_lists: list[list[int]],
    contexts: list[int] | np.ndarray,
    k: int = 1,
    probe: list[int] | np.ndarray = (),
    lead: list[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The graph's inputs for a batch: one list of ``W`` row indices (findings) per patient, each
    patient's context row, ``k``, the probed diseases and each row's lead row (itself when
    ``None``)."""
    rows = np.fromiter((i for i, terms in enumerate(term_lists) for _ in terms), dtype=np.int64)
    terms = np.fromiter((t for terms in term_lists for t in terms), dtype=np.int64)
    return {
        QUERY_ROWS: rows,
        QUERY_TERMS: terms,
        QUERY_CONTEXT: np.asarray(contexts, dtype=np.int64).reshape(-1),
        QUERY_K: np.array([k], dtype=np.int64),
        QUERY_PROBE: np.asarray(probe, dtype=np.int64).reshape(-1),
        QUERY_LEAD: (
            np.arange(len(term_lists), dtype=np.int64)
            if lead is None
            else np.asarray(lead, dtype=np.int64).reshape(-1)
        ),
    }


def context_table(
    term_ptr: np.ndarray,
    nnz_disease: np.ndarray,
    nnz_weight: np.ndarray,
    bias: np.ndarray,
    context_rows: list[tuple[int, ...]],
) -> np.ndarray:
    """[len(context_rows), D] float32: the bias plus the listed rows of ``W``, added in order (the
    arithmetic of :func:`score_batch` for a query of only those rows)."""
    rows = [list(r) for r in context_rows]
    order = np.arange(len(rows))
    flat = [(i, r) for i, rs in zip(order, rows) for r in rs]
    return score_batch(
        term_ptr,
        nnz_disease,
        nnz_weight,
        bias,
        np.array([i for i, _ in flat], dtype=np.int64),
        np.array([r for _, r in flat], dtype=np.int64),
        len(rows),
    )


def to_onnx(
    term_ptr: np.ndarray,
    nnz_disease: np.ndarray,
    nnz_weight: np.ndarray,
    contexts: np.ndarray,
    profiles: np.ndarray | None = None,
    *,
    name: str = "sparse_scores",
    doc: str = "",
    props: dict[str, str] | None = None,
    opset: int = 18,
) -> bytes:
    """The graph described in the module docstring, with the weights as initializers:
    ``contexts`` [C, D] the context rows (:func:`context_table`), ``profiles`` [D, J] what
    :data:`PROFILE_MIX` weighs each disease by (``None``: one column of zeros)."""
    from onnx import TensorProto, helper, numpy_helper

    ptr = np.asarray(term_ptr, dtype=np.int64)
    n_rows = ptr.shape[0] - 1
    contexts = np.asarray(contexts, dtype=np.float32)
    n_diseases = int(contexts.shape[1])
    if profiles is None:
        profiles = np.zeros((n_diseases, 1))
    profiles = np.asarray(profiles, dtype=np.float64)
    # the most common profile, and the diseases whose profile differs from it (never empty)
    unique, counts = np.unique(profiles, axis=0, return_counts=True)
    common = unique[int(np.argmax(counts))]
    differs = np.flatnonzero(np.any(profiles != common, axis=1))
    annotated = differs if len(differs) else np.array([0], dtype=np.int64)

    def const(cname: str, value: np.ndarray) -> Any:
        return numpy_helper.from_array(value, cname)

    inits = [
        const("term_start", ptr[:-1].copy()),
        const("term_length", np.diff(ptr)),
        const("nnz_disease", np.asarray(nnz_disease, dtype=np.int64)),
        const("nnz_weight", np.asarray(nnz_weight, dtype=np.float32)),
        const("contexts", contexts),
        const("n_diseases", np.array([n_diseases], dtype=np.int64)),
        const("zero_i", np.array(0, dtype=np.int64)),
        const("one_i", np.array(1, dtype=np.int64)),
        const("flat", np.array([-1], dtype=np.int64)),
        const("axis1", np.array([1], dtype=np.int64)),
        const("start0", np.array([0], dtype=np.int64)),
        const("annotated", annotated.astype(np.int64)),
        const("annotated_delta", profiles[annotated] - common[None, :]),
        const("common_profile", common.reshape(1, -1)),
    ]
    node = helper.make_node
    nodes = [
        # CSR segment of every (row, term) pair; empty segments dropped.
        node("Gather", ["term_start", QUERY_TERMS], ["seg_start_all"], axis=0),
        node("Gather", ["term_length", QUERY_TERMS], ["seg_length_all"], axis=0),
        node("Greater", ["seg_length_all", "zero_i"], ["nonempty"]),
        node("Compress", ["seg_start_all", "nonempty"], ["seg_start"], axis=0),
        node("Compress", ["seg_length_all", "nonempty"], ["seg_length"], axis=0),
        node("Compress", [QUERY_ROWS, "nonempty"], ["seg_row"], axis=0),
        # Output offset of each segment in the concatenation of all segments.
        node("CumSum", ["seg_length", "zero_i"], ["seg_end"]),
        node("Sub", ["seg_end", "seg_length"], ["seg_offset"]),
        node("ReduceSum", ["seg_length"], ["total"], keepdims=0),
        node("Range", ["zero_i", "total", "one_i"], ["position"]),
        # Segment id of every position: mark segment starts, then a running count.
        node("Shape", ["position"], ["position_shape"]),
        node(
            "ConstantOfShape",
            ["position_shape"],
            ["marks0"],
            value=numpy_helper.from_array(np.array([0], dtype=np.int64)),
        ),
        node("Shape", ["seg_offset"], ["seg_shape"]),
        node(
            "ConstantOfShape",
            ["seg_shape"],
            ["seg_ones"],
            value=numpy_helper.from_array(np.array([1], dtype=np.int64)),
        ),
        node(
            "ScatterElements",
            ["marks0", "seg_offset", "seg_ones"],
            ["marks"],
            axis=0,
            reduction="add",
        ),
        node("CumSum", ["marks", "zero_i"], ["seg_count"]),
        node("Sub", ["seg_count", "one_i"], ["segment"]),
        # Position -> NNZ index and output cell (row * D + disease).
        node("Sub", ["seg_start", "seg_offset"], ["seg_shift"]),
        node("Gather", ["seg_shift", "segment"], ["pos_shift"], axis=0),
        node("Add", ["position", "pos_shift"], ["nnz_index"]),
        node("Gather", ["nnz_disease", "nnz_index"], ["hit_disease"], axis=0),
        node("Gather", ["nnz_weight", "nnz_index"], ["hit_weight"], axis=0),
        node("Gather", ["seg_row", "segment"], ["hit_row"], axis=0),
        node("Mul", ["hit_row", "n_diseases"], ["hit_base"]),
        node("Add", ["hit_base", "hit_disease"], ["hit_cell"]),
        # Each patient's context row, flattened; the hits added in place; back to [n, D].
        node("Gather", ["contexts", QUERY_CONTEXT], ["base_rows"], axis=0),
        node("Shape", ["base_rows"], ["out_shape"]),
        node("Reshape", ["base_rows", "flat"], ["base_flat"]),
        node(
            "ScatterElements",
            ["base_flat", "hit_cell", "hit_weight"],
            ["scores_flat"],
            axis=0,
            reduction="add",
        ),
        node("Reshape", ["scores_flat", "out_shape"], [SCORES]),
        # Top k per row (sorted, ties by the lower index) and the softmax sums.
        node("TopK", [SCORES, QUERY_K], [TOP_SCORES, TOP_INDEX], axis=1, largest=1, sorted=1),
        node("Slice", [TOP_SCORES, "start0", "one_i_1", "axis1"], ["row_max"]),
        node("Sub", [SCORES, "row_max"], ["shifted"]),
        node("Exp", ["shifted"], ["exp"]),
        node("Cast", ["exp"], ["exp64"], to=TensorProto.DOUBLE),
        node("ReduceSum", ["exp64", "axis1"], [NORM], keepdims=0),
        node("Gather", ["exp", "annotated"], ["exp_annotated32"], axis=1),
        node("Cast", ["exp_annotated32"], ["exp_annotated"], to=TensorProto.DOUBLE),
        node("MatMul", ["exp_annotated", "annotated_delta"], ["mix_annotated"]),
        node("Unsqueeze", [NORM, "axis1"], ["norm_column"]),
        node("Mul", ["norm_column", "common_profile"], ["mix_common"]),
        node("Add", ["mix_common", "mix_annotated"], [PROFILE_MIX]),
        # The first row's top diseases and the probed diseases, scored in every row.
        node("Gather", [TOP_INDEX, QUERY_LEAD], ["lead_top"], axis=0),
        node("GatherElements", [SCORES, "lead_top"], [LEAD_TOP_SCORES], axis=1),
        node("Gather", [SCORES, QUERY_PROBE], [PROBE_SCORES], axis=1),
    ]
    inits.append(const("one_i_1", np.array([1], dtype=np.int64)))
    n_profile = int(profiles.shape[1])
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(QUERY_ROWS, TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info(QUERY_TERMS, TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info(QUERY_CONTEXT, TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info(QUERY_K, TensorProto.INT64, [1]),
            helper.make_tensor_value_info(QUERY_PROBE, TensorProto.INT64, ["p"]),
            helper.make_tensor_value_info(QUERY_LEAD, TensorProto.INT64, ["n"]),
        ],
        [
            helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", n_diseases]),
            helper.make_tensor_value_info(TOP_SCORES, TensorProto.FLOAT, ["n", "k"]),
            helper.make_tensor_value_info(TOP_INDEX, TensorProto.INT64, ["n", "k"]),
            helper.make_tensor_value_info(NORM, TensorProto.DOUBLE, ["n"]),
            helper.make_tensor_value_info(PROFILE_MIX, TensorProto.DOUBLE, ["n", n_profile]),
            helper.make_tensor_value_info(LEAD_TOP_SCORES, TensorProto.FLOAT, ["n", "k"]),
            helper.make_tensor_value_info(PROBE_SCORES, TensorProto.FLOAT, ["n", "p"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=f"triage.{name}",
        doc_string=doc
        or f"{n_rows} query rows x {n_diseases} diseases, {len(nnz_weight)} weights, "
        f"{contexts.shape[0]} contexts",
    )
    model.ir_version = min(model.ir_version, 10)
    if props:
        helper.set_model_props(model, props)
    return model.SerializeToString()

"""A batch of sparse queries against a sparse (term x disease) weight matrix, as one ONNX graph.

The knowledge ranker's score of disease ``d`` for a patient is ``bias[d] + Σ_t W[t, d]`` over the
patient's query terms ``t`` (present findings, and excluded findings as their own rows of ``W``).
``W`` is stored CSR by term (``term_ptr``, ``nnz_disease``, ``nnz_weight``). The graph takes the
queries of a whole batch as two flat index lists, ``query_rows`` (which patient) and
``query_terms`` (which row of ``W``), plus ``query_count`` (patients in the batch), and returns the
log-scores ``[query_count, D]``.

It touches only the CSR segments of the queried terms: their lengths are laid end to end
(CumSum), every position is labelled with its segment (ScatterElements + CumSum), and the gathered
``(disease, weight)`` pairs are added onto the broadcast bias with one ``ScatterElements(add)`` at
``row * D + disease``. Cost: O(queried entries + batch x D) — the batch x D term is writing the
output — with no Python loop and one onnxruntime call for any number of patients.

:func:`score_batch` is the numpy reference of the same arithmetic (used by tests and training).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUERY_ROWS = "query_rows"
QUERY_TERMS = "query_terms"
QUERY_COUNT = "query_count"
SCORES = "scores"


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


def encode_queries(term_lists: list[list[int]]) -> dict[str, np.ndarray]:
    """The graph's inputs for a batch: one list of ``W`` row indices per patient."""
    rows = np.fromiter((i for i, terms in enumerate(term_lists) for _ in terms), dtype=np.int64)
    terms = np.fromiter((t for terms in term_lists for t in terms), dtype=np.int64)
    return {
        QUERY_ROWS: rows,
        QUERY_TERMS: terms,
        QUERY_COUNT: np.array([len(term_lists)], dtype=np.int64),
    }


def to_onnx(
    term_ptr: np.ndarray,
    nnz_disease: np.ndarray,
    nnz_weight: np.ndarray,
    bias: np.ndarray,
    *,
    name: str = "sparse_scores",
    doc: str = "",
    props: dict[str, str] | None = None,
    opset: int = 18,
) -> bytes:
    """The graph described in the module docstring, with the weights as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    ptr = np.asarray(term_ptr, dtype=np.int64)
    n_rows = ptr.shape[0] - 1
    n_diseases = int(bias.shape[0])

    def const(cname: str, value: np.ndarray) -> Any:
        return numpy_helper.from_array(value, cname)

    inits = [
        const("term_start", ptr[:-1].copy()),
        const("term_length", np.diff(ptr)),
        const("nnz_disease", np.asarray(nnz_disease, dtype=np.int64)),
        const("nnz_weight", np.asarray(nnz_weight, dtype=np.float32)),
        const("bias", np.asarray(bias, dtype=np.float32).reshape(1, -1)),
        const("n_diseases", np.array([n_diseases], dtype=np.int64)),
        const("zero_i", np.array(0, dtype=np.int64)),
        const("one_i", np.array(1, dtype=np.int64)),
        const("flat", np.array([-1], dtype=np.int64)),
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
        # Bias broadcast to [count, D], flattened; the hits added in place; back to [count, D].
        node("Concat", [QUERY_COUNT, "n_diseases"], ["out_shape"], axis=0),
        node("Expand", ["bias", "out_shape"], ["bias_rows"]),
        node("Reshape", ["bias_rows", "flat"], ["bias_flat"]),
        node(
            "ScatterElements",
            ["bias_flat", "hit_cell", "hit_weight"],
            ["scores_flat"],
            axis=0,
            reduction="add",
        ),
        node("Reshape", ["scores_flat", "out_shape"], [SCORES]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(QUERY_ROWS, TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info(QUERY_TERMS, TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info(QUERY_COUNT, TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", n_diseases])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=f"triage.{name}",
        doc_string=doc or f"{n_rows} query rows x {n_diseases} diseases, {len(nnz_weight)} weights",
    )
    model.ir_version = min(model.ir_version, 10)
    if props:
        helper.set_model_props(model, props)
    return model.SerializeToString()

"""Model selection: candidate classifier families x class-balancing methods compared by stratified
cross-validation on the (unbalanced) training rows, with the knowledge ranker in the same table.

Design notes
------------
* Balancing happens inside the training folds only. Each candidate is an imbalanced-learn
  ``Pipeline`` (impute -> [sampler] -> [scale] -> model); imblearn applies samplers in ``fit`` only,
  so validation rows are the original rows of the fold, never resampled or synthetic.
* Class weights: ``class_weight="balanced"`` where the estimator has it (logistic regression,
  random forest); ``sample_weight`` from ``compute_sample_weight("balanced")`` otherwise
  (XGBoost, MLP).
* SMOTE, not SMOTE-NC: after encoding, every feature is numeric (five vitals) or a 0/1 indicator
  (sex one-hot, ~450 symptom indicators). SMOTE-NC would treat each indicator as a categorical
  column (one-hot again, hundreds of columns, median-std distance) and give synthetic rows the
  neighbours' most frequent value, which for sparse symptom sets drops most rare symptoms. SMOTE
  interpolates between two patients of the same class, so an indicator becomes a value in [0, 1]
  ("present in one of the two"); trees and linear models handle that, and the vitals, which
  carry most of the numeric signal, interpolate naturally. SMOTE needs complete rows, so the
  median imputer comes before the sampler. ``k_neighbors`` = min(5, smallest training-fold class
  - 1); a fold whose smallest class has a single row falls back to random over-sampling.
* Folds: ``k = min(folds, max(2, rows of the rarest class))``. Classes with fewer than ``k`` rows
  (only possible for single-row classes) are never validated: their rows are added to every
  training fold, so the models still learn them, and the table says how many were left out of
  validation. (The training table already drops classes below ``ModelPolicy.min_class_rows``.)
* The knowledge ranker needs no training: each fold's validation rows whose true class is an
  orphan disease of its universe are ranked from their symptoms; its orphan recall is top-1 over
  those rows. Macro-F1 over all classes is not defined for it (it cannot predict common diseases
  or NONE): null in the table, and it is never selected as the diagnosis head (it is part of the
  served blend anyway).
* Cost on 2 cores (demo cohort: 3,112 training rows x 471 features x 45 classes, 3 folds),
  measured: stage 1 (4 families x {none, class weights}) ~31 s, of which XGBoost ~17 s and the
  MLP ~9 s. Resampling makes every class as large as the largest (3,112 -> ~17,700 rows per
  training fold), so per family ROS + SMOTE cost: logistic regression ~5 s, MLP ~49 s, XGBoost
  ~170 s. Hence the resampling balancings run only for the ``resample_top`` best families of
  stage 1 (default 1, set in ``SelectionConfig``); the table's asset metadata lists what was not
  run. Whole comparison in the pipeline: ~31 s. Every estimator runs with one thread.
* Scale (issue 17): the asset compares the candidates on a stratified sample sized by
  :func:`learning_curve` (at most ``SELECTION_MAX_ROWS``), and resampling adds at most
  ``MAX_RESAMPLED_ROWS`` rows (:func:`resampling_targets`); the demo's training split is below
  both, so its comparison is unchanged.
* ONNX size: a forest stores one weight per class per leaf; ``RF_PARAMS`` (100 trees, depth 10,
  min 3 rows per leaf) exported at 0.7 MB on the demo data (45 classes, with or without SMOTE);
  depth 10 caps it at 100 x 1,024 leaves, so it cannot reach the unbounded forests' hundreds of
  MB. Logistic regression and the MLP are ~0.1 MB. Every family is selectable.
"""

import time
import warnings
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

from diagnosis.categories import CATEGORY_ORPHAN, category_of
from diagnosis.ranker import KnowledgeRanker

LOGISTIC_REGRESSION = "logistic_regression"
RANDOM_FOREST = "random_forest"
XGBOOST = "xgboost"
MLP = "mlp"
KNOWLEDGE_RANKER = "knowledge_ranker"
FAMILIES = (LOGISTIC_REGRESSION, RANDOM_FOREST, XGBOOST, MLP)

NO_BALANCING = "none"
CLASS_WEIGHT = "class_weight"
RANDOM_OVER_SAMPLING = "random_over_sampling"
SMOTE_BALANCING = "smote"
BALANCINGS = (NO_BALANCING, CLASS_WEIGHT, RANDOM_OVER_SAMPLING, SMOTE_BALANCING)
RESAMPLING = (RANDOM_OVER_SAMPLING, SMOTE_BALANCING)
# At most this many synthetic rows per resampling (see resampling_targets): balancing a 100 k-row
# split "as large as the largest class" would otherwise materialise millions of rows.
MAX_RESAMPLED_ROWS = 100_000

# XGBoost hyperparameters (the historical diagnosis model); the severity head and an XGBoost diagnosis head use them.
XGB_PARAMS = {
    "n_estimators": 60,
    "max_depth": 4,
    "learning_rate": 0.25,
    "subsample": 0.9,
    "tree_method": "hist",
    "n_jobs": 1,
}
LOGREG_PARAMS = {"C": 0.5, "max_iter": 300, "tol": 1e-3}
# A small forest: ONNX stores one weight per class per leaf, so leaves x classes drives its size.
RF_PARAMS = {"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 3, "n_jobs": 1}
MLP_PARAMS = {
    "hidden_layer_sizes": (64,),
    "alpha": 1e-3,
    "max_iter": 120,
    "early_stopping": False,
}
DEFAULT_PARAMS = {
    LOGISTIC_REGRESSION: LOGREG_PARAMS,
    RANDOM_FOREST: RF_PARAMS,
    XGBOOST: XGB_PARAMS,
    MLP: MLP_PARAMS,
}
SCALED = (LOGISTIC_REGRESSION, MLP)  # trees need no scaler (and XGBoost's ONNX parity dislikes it)
NATIVE_CLASS_WEIGHT = (LOGISTIC_REGRESSION, RANDOM_FOREST)

TABLE_SCHEMA = {
    "model": pl.Utf8,
    "balancing": pl.Utf8,
    "macro_f1_mean": pl.Float64,
    "macro_f1_std": pl.Float64,
    "orphan_recall": pl.Float64,
    "orphan_rows": pl.Int64,
    "fit_seconds": pl.Float64,
    "n_folds": pl.Int64,
    "train_only_classes": pl.Int64,
    "note": pl.Utf8,
}


# ------------------------------------------------------------------------------ estimators
def make_estimator(family: str, seed: int, params: dict | None = None, class_weight: bool = False):
    params = {**DEFAULT_PARAMS[family], **(params or {})}
    if family == LOGISTIC_REGRESSION:
        return LogisticRegression(
            random_state=seed, class_weight="balanced" if class_weight else None, **params
        )
    if family == RANDOM_FOREST:
        return RandomForestClassifier(
            random_state=seed, class_weight="balanced" if class_weight else None, **params
        )
    if family == XGBOOST:
        return XGBClassifier(random_state=seed, **params)
    if family == MLP:
        return MLPClassifier(random_state=seed, **params)
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def resampling_targets(y_train: np.ndarray, max_rows: int | None = MAX_RESAMPLED_ROWS) -> dict:
    """Rows per class after resampling: every class as large as the largest, unless that would
    add more than ``max_rows`` rows in all; then every class is raised to the highest common
    floor that adds at most ``max_rows`` rows (classes already above it keep their recorded
    rows, nothing is removed), so the synthetic rows never exceed ``max_rows``."""
    counts = Counter(y_train.tolist())
    sizes = np.array(sorted(counts.values()))
    largest = int(sizes[-1])

    def added(floor: int) -> int:
        return int(np.maximum(floor - sizes, 0).sum())

    target = largest
    if max_rows is not None and added(largest) > max_rows:
        low, high = int(sizes[0]), largest  # added(low) == 0 <= max_rows < added(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if added(middle) <= max_rows else (low, middle)
        target = low
    return {int(c): max(n, target) for c, n in counts.items()}


def make_sampler(
    balancing: str, y_train: np.ndarray, seed: int, max_rows: int | None = MAX_RESAMPLED_ROWS
):
    """The fold's sampler (None without resampling); SMOTE's neighbours fit the smallest class;
    the synthetic rows are capped by ``max_rows`` (:func:`resampling_targets`)."""
    if balancing not in RESAMPLING:
        return None
    smallest = min(Counter(y_train.tolist()).values())
    targets = resampling_targets(y_train, max_rows)
    if balancing == SMOTE_BALANCING and smallest >= 2:
        return SMOTE(sampling_strategy=targets, k_neighbors=min(5, smallest - 1), random_state=seed)
    return RandomOverSampler(sampling_strategy=targets, random_state=seed)


def make_pipeline(
    family: str,
    balancing: str,
    y_train: np.ndarray,
    seed: int,
    params: dict | None = None,
    max_resampled_rows: int | None = MAX_RESAMPLED_ROWS,
) -> ImbPipeline:
    """impute -> [sampler] -> [scale] -> model; the sampler acts in ``fit`` only."""
    if balancing not in BALANCINGS:
        raise ValueError(f"unknown balancing {balancing!r}; expected one of {BALANCINGS}")
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    sampler = make_sampler(balancing, y_train, seed, max_resampled_rows)
    if sampler is not None:
        steps.append(("sample", sampler))
    if family in SCALED:
        steps.append(("scale", StandardScaler()))
    native = balancing == CLASS_WEIGHT and family in NATIVE_CLASS_WEIGHT
    steps.append(("model", make_estimator(family, seed, params, class_weight=native)))
    return ImbPipeline(steps)


def fit_kwargs(family: str, balancing: str, y_train: np.ndarray) -> dict:
    if balancing == CLASS_WEIGHT and family not in NATIVE_CLASS_WEIGHT:
        return {"model__sample_weight": compute_sample_weight("balanced", y_train)}
    return {}


def inference_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted steps without the sampler, as a plain scikit-learn Pipeline (what ONNX exports
    and what imblearn itself runs at predict time)."""
    return Pipeline([(name, step) for name, step in fitted.steps if name != "sample"])


BLOCK_COLUMNS = 64
# The fitted attributes of a transformer that hold one value per column, each computed from that
# column alone.
COLUMN_STATISTICS = {
    SimpleImputer: ("statistics_",),
    StandardScaler: ("mean_", "var_", "scale_", "n_samples_seen_"),
}


def fit_by_columns(transformer, X: np.ndarray):
    """``transformer.fit(X)`` for the median imputer and the standard scaler, their per-column
    statistics computed :data:`BLOCK_COLUMNS` columns at a time. A column's median, mean and
    variance do not depend on the other columns, and numpy sums a block's columns over the rows
    in the same order as the whole matrix's, so the statistics are the same to the bit (tested).
    A whole fit needs several times the matrix at once: scikit-learn's median goes through a
    masked array (measured: +950 MB for a 211 MB float32 matrix) and the scaler's variance
    through float64 temporaries (+1.2 GB for the 650 MB float32 training split of 100 k
    patients with its triage copies). Every other fitted attribute comes from a fit on the first
    row (dtype, feature count)."""
    names = COLUMN_STATISTICS.get(type(transformer))
    if names is None or X.shape[1] <= BLOCK_COLUMNS or len(X) < 2:
        return transformer.fit(X)
    blocks = [
        clone(transformer).fit(X[:, j : j + BLOCK_COLUMNS])
        for j in range(0, X.shape[1], BLOCK_COLUMNS)
    ]
    transformer.fit(X[:1])
    for name in names:
        values = [getattr(block, name) for block in blocks]
        if all(np.ndim(v) == 0 for v in values) and len(set(values)) == 1:
            setattr(transformer, name, values[0])  # one count for every column (no NaN)
        else:
            setattr(
                transformer,
                name,
                np.concatenate(
                    [np.broadcast_to(v, (b.n_features_in_,)) for v, b in zip(values, blocks)]
                ),
            )
    return transformer


@contextmanager
def transforming_in_place(pipeline):
    """The steps that take a ``copy`` parameter (the imputer, the scaler) transform their input
    in place while the block runs, and copy again afterwards. For a matrix built for one fit
    alone (a concatenation of rows and their triage copies): the values are the same to the bit,
    without a full-size copy per step (650 MB each for a 100 k training split)."""
    steps = [step for _, step in pipeline.steps if "copy" in step.get_params(deep=False)]
    before = [step.get_params(deep=False)["copy"] for step in steps]
    for step in steps:
        step.set_params(copy=False)
    try:
        yield
    finally:
        for step, copy in zip(steps, before):
            step.set_params(copy=copy)


def fit_pipeline(
    pipeline, X: np.ndarray, y: np.ndarray, *, consume: bool = False, **kwargs
) -> Pipeline:
    """What ``pipeline.fit(X, y, **kwargs)`` does for [impute] -> [scale] -> model (each transform
    fitted and applied in turn, the model fitted on the last output), the transforms fitted by
    :func:`fit_by_columns`; returned as a plain scikit-learn Pipeline of the same fitted steps.
    ``consume``: ``X`` was built for this fit and is overwritten by the imputed and scaled values
    (:func:`transforming_in_place`) instead of being copied."""
    *transforms, (name, model) = pipeline.steps
    with transforming_in_place(pipeline) if consume else nullcontext():
        for _, step in transforms:
            X = fit_by_columns(step, X).transform(X)
        prefix = f"{name}__"
        fit_quietly(model, X, y, **{k.removeprefix(prefix): v for k, v in kwargs.items()})
    return Pipeline([*transforms, (name, model)])


def fit_quietly(pipeline: ImbPipeline, X: np.ndarray, y: np.ndarray, **kwargs) -> ImbPipeline:
    """Fit without the iteration-cap warnings: the MLP's ``max_iter`` is a deliberate time budget
    (see the timings above) and candidates are judged by their cross-validated scores, not by
    whether the optimiser converged; the warning would only repeat that on every fold."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(X, y, **kwargs)


def fit_candidate(
    family: str, balancing: str, X: np.ndarray, y: np.ndarray, seed: int, params: dict | None = None
) -> Pipeline:
    """Train one candidate on all rows and return its sampler-free inference pipeline."""
    pipeline = make_pipeline(family, balancing, y, seed, params)
    fit_quietly(pipeline, X, y, **fit_kwargs(family, balancing, y))
    return inference_pipeline(pipeline)


def candidate_params(family: str, balancing: str, params: dict | None = None) -> dict:
    merged = {**DEFAULT_PARAMS[family], **(params or {})}
    return {
        "model": family,
        "balancing": balancing,
        "imputer": "median",
        "scaler": "standard" if family in SCALED else "none",
        **{f"{family}_{k}": v for k, v in merged.items()},
    }


# ------------------------------------------------------------------------------ folds
def fold_plan(y: np.ndarray, folds: int, seed: int):
    """``(k, train_only_classes, [(train_idx, validation_idx), ...])``: stratified folds; rows of
    classes with fewer than ``k`` rows join every training fold and are never validated."""
    counts = Counter(y.tolist())
    k = int(min(folds, max(2, min(counts.values()))))
    train_only = sorted(c for c, n in counts.items() if n < k)
    held = np.isin(y, train_only)
    rows = np.flatnonzero(~held)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = [
        (np.sort(np.concatenate([rows[tr], np.flatnonzero(held)])), rows[va])
        for tr, va in splitter.split(rows, y[rows])
    ]
    return k, train_only, splits


@dataclass
class CandidateResult:
    model: str
    balancing: str
    macro_f1: list[float]
    orphan_recall: float | None
    orphan_rows: int
    fit_seconds: list[float]
    n_folds: int
    train_only_classes: int
    params: dict
    confusion: dict | None = None
    fold_rows: list[dict] = field(default_factory=list)
    note: str | None = None
    mlflow_run_id: str | None = None

    def row(self) -> dict:
        return {
            "model": self.model,
            "balancing": self.balancing,
            "macro_f1_mean": float(np.mean(self.macro_f1)) if self.macro_f1 else None,
            "macro_f1_std": float(np.std(self.macro_f1)) if self.macro_f1 else None,
            "orphan_recall": self.orphan_recall,
            "orphan_rows": self.orphan_rows,
            "fit_seconds": float(np.mean(self.fit_seconds)) if self.fit_seconds else 0.0,
            "n_folds": self.n_folds,
            "train_only_classes": self.train_only_classes,
            "note": self.note,
        }


def cross_validate_candidate(
    family,
    balancing,
    X,
    y,
    classes,
    seed,
    folds=3,
    params=None,
    max_resampled_rows: int | None = MAX_RESAMPLED_ROWS,
) -> CandidateResult:
    """Out-of-fold predictions of one candidate; balancing is fitted on training folds only."""
    k, train_only, splits = fold_plan(y, folds, seed)
    orphan = np.array([category_of(c) == CATEGORY_ORPHAN for c in classes])
    predicted = np.full(y.shape, -1)
    f1s, seconds, fold_rows = [], [], []
    for train, valid in splits:
        pipeline = make_pipeline(family, balancing, y[train], seed, params, max_resampled_rows)
        start = time.perf_counter()
        fit_quietly(pipeline, X[train], y[train], **fit_kwargs(family, balancing, y[train]))
        seconds.append(time.perf_counter() - start)
        model = pipeline.steps[-1][1]
        fold_pred = model.classes_[pipeline.predict_proba(X[valid]).argmax(axis=1)]
        predicted[valid] = fold_pred
        f1s.append(float(f1_score(y[valid], fold_pred, average="macro", zero_division=0)))
        fold_rows.append({"train_rows": int(train.size), "validation_rows": int(valid.size)})
    validated = predicted >= 0
    truth, pred = y[validated], predicted[validated]
    is_orphan = orphan[truth]
    labels = list(range(len(classes)))
    return CandidateResult(
        model=family,
        balancing=balancing,
        macro_f1=f1s,
        orphan_recall=float(np.mean(pred[is_orphan] == truth[is_orphan]))
        if is_orphan.any()
        else None,
        orphan_rows=int(is_orphan.sum()),
        fit_seconds=seconds,
        n_folds=k,
        train_only_classes=len(train_only),
        params=candidate_params(family, balancing, params),
        confusion={
            "classes": list(classes),
            "matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
        },
        fold_rows=fold_rows,
    )


def evaluate_ranker(
    ranker: KnowledgeRanker,
    symptom_lists: list[list[str]],
    y: np.ndarray,
    classes: list[str],
    seed: int,
    folds: int = 3,
) -> CandidateResult:
    """Top-1 of the knowledge ranker on each fold's validation rows whose true class is an
    orphan disease of its universe (no training, so the folds only mirror the classifiers')."""
    k, train_only, splits = fold_plan(y, folds, seed)
    universe = set(ranker.diseases)
    hits, top10, seconds = [], [], []
    for _, valid in splits:
        start = time.perf_counter()
        for i in valid:
            code = classes[y[i]]
            if category_of(code) != CATEGORY_ORPHAN or code not in universe:
                continue
            scores = ranker.score(symptom_lists[i] or [])
            truth = ranker.disease_index(code)
            hits.append(int(scores.argmax()) == truth)
            top10.append(int((scores > scores[truth]).sum()) < 10)
        seconds.append(time.perf_counter() - start)
    return CandidateResult(
        model=KNOWLEDGE_RANKER,
        balancing=NO_BALANCING,
        macro_f1=[],
        orphan_recall=float(np.mean(hits)) if hits else None,
        orphan_rows=len(hits),
        fit_seconds=[0.0],
        n_folds=k,
        train_only_classes=len(train_only),
        params={
            "model": KNOWLEDGE_RANKER,
            **{f"ranker_{k}": v for k, v in ranker.params["weights"].items()},
            "ranker_temperature": ranker.params["temperature"],
        },
        note=(
            f"no training; top-1 over {ranker.n_diseases} annotated diseases on orphan rows only "
            f"(top-10 {np.mean(top10):.3f}, scoring {sum(seconds):.1f}s); macro-F1 undefined"
            if hits
            else "no orphan validation row in the ranker's universe"
        ),
    )


def resampling_plan(
    first: list[CandidateResult],
    candidates=FAMILIES,
    balancings=BALANCINGS,
    resample_top: int | None = 2,
) -> tuple[list[str], list[str]]:
    """(the families that also get the resampling balancings: the ``resample_top`` best of stage 1
    by macro-F1, all when None or when stage 1 ran nothing; the candidates cut, as
    ``family+balancing``)."""
    second = [b for b in balancings if b in RESAMPLING]
    best_of: dict[str, float] = {}
    for r in first:
        best_of[r.model] = max(best_of.get(r.model, -1.0), float(np.mean(r.macro_f1)))
    ranked = sorted(best_of, key=best_of.get, reverse=True)
    resampled = list(candidates) if resample_top is None or not first else ranked[:resample_top]
    cut = [f"{family}+{b}" for family in candidates if family not in resampled for b in second]
    return resampled, cut


def comparison_table(results: list[CandidateResult]) -> pl.DataFrame:
    return pl.DataFrame([r.row() for r in results], schema=TABLE_SCHEMA, orient="row")


@dataclass
class Comparison:
    table: pl.DataFrame
    results: list[CandidateResult]
    seconds: float
    cut: list[str]


def run_comparison(
    X,
    y,
    classes,
    seed,
    folds=3,
    candidates=FAMILIES,
    balancings=BALANCINGS,
    resample_top: int | None = 2,
    ranker: KnowledgeRanker | None = None,
    symptom_lists: list[list[str]] | None = None,
    params=None,
    max_resampled_rows: int | None = MAX_RESAMPLED_ROWS,
) -> Comparison:
    """Stage 1: every family with the balancings that do not resample. Stage 2: the resampling
    balancings only for the ``resample_top`` best families by macro-F1 (all when None)."""
    start = time.perf_counter()
    params = params or {}
    results: list[CandidateResult] = []
    first = [b for b in balancings if b not in RESAMPLING]
    second = [b for b in balancings if b in RESAMPLING]
    for family in candidates:
        for balancing in first:
            results.append(
                cross_validate_candidate(
                    family,
                    balancing,
                    X,
                    y,
                    classes,
                    seed,
                    folds,
                    params.get(family),
                    max_resampled_rows,
                )
            )
    resampled, cut = resampling_plan(results, candidates, balancings, resample_top)
    for family in resampled:
        for balancing in second:
            results.append(
                cross_validate_candidate(
                    family,
                    balancing,
                    X,
                    y,
                    classes,
                    seed,
                    folds,
                    params.get(family),
                    max_resampled_rows,
                )
            )
    if ranker is not None and symptom_lists is not None:
        results.append(evaluate_ranker(ranker, symptom_lists, y, classes, seed, folds))
    table = comparison_table(results)
    return Comparison(table, results, time.perf_counter() - start, cut)


def compare_candidates(
    X, y, classes, seed, folds=3, candidates=FAMILIES, balancings=BALANCINGS, **kwargs
) -> pl.DataFrame:
    """One row per candidate x balancing (see :func:`run_comparison`)."""
    return run_comparison(X, y, classes, seed, folds, candidates, balancings, **kwargs).table


def select_candidate(table: pl.DataFrame, min_orphan_recall: float) -> dict:
    """Highest mean macro-F1 among candidates whose orphan recall reaches the floor (all
    candidates when none does; a candidate without orphan rows is not held to it); ties go to
    the faster fit. Rows without macro-F1 (the knowledge ranker) are never selected."""
    scored = table.filter(pl.col("macro_f1_mean").is_not_null())
    if scored.is_empty():
        raise ValueError("no candidate with a macro-F1 to select from")
    eligible = scored.filter(
        pl.col("orphan_recall").is_null() | (pl.col("orphan_recall") >= min_orphan_recall)
    )
    floor_met = not eligible.is_empty()
    pool = eligible if floor_met else scored
    row = pool.sort(["macro_f1_mean", "fit_seconds"], descending=[True, False]).row(0, named=True)
    return {**row, "orphan_floor_met": floor_met, "min_orphan_recall": min_orphan_recall}


def markdown_table(table: pl.DataFrame, selected: dict | None = None) -> str:
    columns = [
        "model",
        "balancing",
        "macro_f1_mean",
        "macro_f1_std",
        "orphan_recall",
        "orphan_rows",
        "fit_seconds",
        "n_folds",
    ]

    def cell(v):
        if v is None:
            return "—"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " | selected |", "|" + "---|" * (len(columns) + 1)]
    for row in table.iter_rows(named=True):
        chosen = selected is not None and (row["model"], row["balancing"]) == (
            selected["model"],
            selected["balancing"],
        )
        lines.append(
            "| " + " | ".join(cell(row[c]) for c in columns) + f" | {'**yes**' if chosen else ''} |"
        )
    notes = [f"- {r['model']}: {r['note']}" for r in table.iter_rows(named=True) if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


# ------------------------------------------------------------------------------ sample for selection
# Model selection compares every candidate on a stratified sample of the training split whose
# size a learning curve decides: the reference candidate is fitted on nested samples (start,
# twice as many, ...) and scored on a fixed held-out set of rows outside them; the sample is the
# first size whose doubling gained less than CURVE_TOLERANCE macro-F1 (or the cap). Small splits
# (at most SELECTION_START_ROWS rows) are compared whole. The curve goes to the asset metadata.
SELECTION_START_ROWS = 4_000
SELECTION_MAX_ROWS = 16_000
CURVE_TOLERANCE = 0.01
CURVE_HOLDOUT_ROWS = 4_000
CURVE_REFERENCE = (LOGISTIC_REGRESSION, CLASS_WEIGHT)  # quick, and sensitive to rows per class
MIN_ROWS_PER_CLASS = 6  # every class keeps this many rows (or all it has) in any sample


def stratified_order(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(an order of the rows whose every prefix holds each class in proportion, each row's rank
    within its class in that order)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    rank = np.empty(n, dtype=np.int64)
    counts = np.bincount(y)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(y == c)
        rank[rng.permutation(members)] = np.arange(members.size)
    key = (rank + rng.random(n)) / counts[y]
    return np.argsort(key, kind="stable"), rank


def stratified_sample(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Sorted row indices of a stratified sample of about ``rows`` rows (every class keeps at
    least MIN_ROWS_PER_CLASS rows, or all it has); samples of one seed are nested."""
    if rows >= len(y):
        return np.arange(len(y))
    order, rank = stratified_order(y, seed)
    return np.union1d(order[:rows], np.flatnonzero(rank < MIN_ROWS_PER_CLASS))


@dataclass
class LearningCurve:
    rows_total: int
    rows_chosen: int
    points: list[dict]  # {"rows", "macro_f1", "seconds"}
    reason: str
    reference: str = f"{CURVE_REFERENCE[0]}+{CURVE_REFERENCE[1]}"
    holdout_rows: int = 0
    tolerance: float = CURVE_TOLERANCE

    def to_metadata(self) -> dict:
        return {
            "rows_total": self.rows_total,
            "rows_chosen": self.rows_chosen,
            "reference_candidate": self.reference,
            "holdout_rows": self.holdout_rows,
            "tolerance_macro_f1": self.tolerance,
            "reason": self.reason,
            "points": self.points,
        }

    def markdown(self) -> str:
        lines = [
            f"Reference {self.reference}, scored on {self.holdout_rows} held-out rows; "
            f"{self.reason}.",
            "",
            "| sample rows | macro-F1 | fit s |",
            "|---|---|---|",
        ]
        for p in self.points:
            mark = " **(chosen)**" if p["rows"] == self.rows_chosen else ""
            lines.append(f"| {p['rows']}{mark} | {p['macro_f1']:.4f} | {p['seconds']:.1f} |")
        return "\n".join(lines)


def learning_curve(
    X,
    y: np.ndarray,
    seed: int,
    start: int = SELECTION_START_ROWS,
    max_rows: int = SELECTION_MAX_ROWS,
    tolerance: float = CURVE_TOLERANCE,
    holdout_rows: int = CURVE_HOLDOUT_ROWS,
) -> LearningCurve:
    """How many rows the comparison needs (see the block comment above)."""
    n = len(y)
    if n <= start:
        return LearningCurve(n, n, [], f"{n} rows <= {start}: the whole split is compared")
    held = stratified_sample(y, min(holdout_rows, n // 4), seed + 101)
    rest = np.setdiff1d(np.arange(n), held)
    family, balancing = CURVE_REFERENCE
    points: list[dict] = []
    rows = start
    chosen, reason = None, None
    while True:
        rows = min(rows, rest.size)
        sample = rest[stratified_sample(y[rest], rows, seed)]
        pipeline = make_pipeline(family, balancing, y[sample], seed)
        t0 = time.perf_counter()
        fit_quietly(pipeline, X[sample], y[sample], **fit_kwargs(family, balancing, y[sample]))
        seconds = time.perf_counter() - t0
        model = pipeline.steps[-1][1]
        pred = model.classes_[pipeline.predict_proba(X[held]).argmax(axis=1)]
        f1 = float(f1_score(y[held], pred, average="macro", zero_division=0))
        points.append({"rows": int(sample.size), "macro_f1": round(f1, 4), "seconds": seconds})
        if len(points) >= 2 and f1 - points[-2]["macro_f1"] < tolerance:
            chosen = points[-2]["rows"]
            reason = (
                f"doubling {chosen} -> {sample.size} rows gained {f1 - points[-2]['macro_f1']:+.4f}"
                f" macro-F1 (< {tolerance}): {chosen} rows are enough"
            )
            break
        if rows >= rest.size:
            chosen, reason = n, "the curve still rose at the whole split: every row is compared"
            break
        if rows >= max_rows:
            chosen = int(sample.size)
            reason = f"the curve still rose at the cap of {max_rows} rows: the cap is used"
            break
        rows *= 2
    return LearningCurve(n, int(chosen), points, reason, holdout_rows=int(held.size))

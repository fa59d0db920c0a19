"""IEMOCAP leave-one-session-out: one run per test session, and the folds' mean and spread."""

import os

import jax
import ml_collections
import numpy as np

from avfbp_jax.train import report
from avfbp_jax.train.loop import train_and_evaluate

NUM_FOLDS = 5


def aggregate_folds(results: list[dict]) -> dict:
    """Mean and standard deviation of WA, UA and macro-F1 over folds' test results."""
    out = {"folds": results}
    for key in ("wa", "ua", "macro_f1"):
        values = np.array([r["test"][key] for r in results])
        out[key] = {"mean": float(values.mean()), "std": float(values.std()),
                    "per_fold": values.tolist()}
    return out


def train_all_folds(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains fold K (data.test_session = K) into WORKDIR/foldK for K = 1..5; process 0 writes
    the aggregate to WORKDIR/folds.json. Returns the aggregate (aggregate_folds)."""
    results = []
    for fold in range(1, NUM_FOLDS + 1):
        fold_config = ml_collections.ConfigDict(config.to_dict())
        fold_config.data.test_session = fold
        print(f"=== fold {fold}/{NUM_FOLDS}: test session {fold} ===", flush=True)
        results.append(train_and_evaluate(fold_config, os.path.join(workdir, f"fold{fold}")))
    summary = aggregate_folds(results)
    if jax.process_index() == 0:
        report.write_json(os.path.join(workdir, "folds.json"), summary)
    return summary

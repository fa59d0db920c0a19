"""WA, UA, macro-F1 and modality weights against hand-computed values and scikit-learn."""

import numpy as np
import pytest

from avfbp_jax.train import metrics, report


def test_classification_metrics_by_hand():
    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 1, 2, 1, 0, 2, 2])
    m = metrics.classification_metrics(labels, preds, classes)
    assert m["confusion"] == [[2, 1, 1], [1, 1, 0], [0, 0, 2]]
    assert m["wa"] == pytest.approx(5 / 8)
    assert m["recall"] == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert m["ua"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    precision = {"a": 2 / 3, "b": 1 / 2, "c": 2 / 3}
    f1 = {c: 2 * precision[c] * m["recall"][c] / (precision[c] + m["recall"][c]) for c in classes}
    assert m["f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert m["support"] == {"a": 4, "b": 2, "c": 2}


def test_absent_class_is_left_out_of_ua():
    m = metrics.classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), ["a", "b", "c"])
    assert m["recall"]["c"] is None
    assert m["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["f1"]["c"] is None


@pytest.mark.parametrize("num_labels", [5, 4, 1])  # every class, one absent, a single class
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # UA's definition
def test_classification_metrics_match_scikit_learn(num_labels):
    """scikit-learn as an independent oracle: WA, UA (balanced accuracy), macro-F1 over the
    classes present, per-class recall / precision / F1 and the confusion matrix."""
    from sklearn import metrics as skm

    classes = ["a", "b", "c", "d", "e"]
    rng = np.random.default_rng(num_labels)
    for _ in range(10):
        labels = rng.integers(0, num_labels, 60)
        preds = np.where(rng.uniform(size=60) < 0.5, labels, rng.integers(0, 5, 60))
        m = metrics.classification_metrics(labels, preds, classes)
        present = sorted(set(labels.tolist()))
        assert m["confusion"] == skm.confusion_matrix(labels, preds, labels=range(5)).tolist()
        assert m["wa"] == pytest.approx(skm.accuracy_score(labels, preds))
        assert m["ua"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
        assert m["macro_f1"] == pytest.approx(
            skm.f1_score(labels, preds, labels=present, average="macro", zero_division=0))
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            labels, preds, labels=range(5), zero_division=0)
        for i, c in enumerate(classes):
            assert m["support"][c] == support[i]
            if i in present:
                assert m["recall"][c] == pytest.approx(recall[i])
                assert m["f1"][c] == pytest.approx(f1[i])
            else:
                assert m["recall"][c] is None and m["f1"][c] is None
            if i in present or i in preds:
                assert m["precision"][c] == pytest.approx(precision[i])


def test_modality_weights_by_class_masks_empty_trunks():
    labels = np.array([0, 1, 1])
    w = np.array([[[0.2, 0.8], [0.9, 0.1]], [[0.6, 0.4], [0.4, 0.6]], [[0.1, 0.9], [0.0, 1.0]]])
    has_data = np.array([[True, False], [True, True], [True, True]])
    out = metrics.modality_weights_by_class(labels, w, ["x", "y"], has_data)
    assert out["x"]["audio"] == pytest.approx(0.2)
    assert out["y"]["audio"] == pytest.approx((0.5 + 0.05) / 2)
    glob = metrics.modality_weights_by_class(labels, w[:, 0], ["x", "y"])
    assert glob["y"]["video"] == pytest.approx((0.4 + 0.9) / 2)


def test_summary_and_plots(tmp_path):
    m = metrics.classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["p", "q"])
    m["modality_weights"] = {"p": {"audio": 0.3, "video": 0.7}}
    text = report.summary({"val": m}, ["p", "q"], "header")
    assert "66.67%" in text and "audio 0.300" in text
    assert report.scores_table({"val": m}, ["p", "q"]) in text
    report.plot_confusion(str(tmp_path / "c.png"), m["confusion"], ["p", "q"], "t")
    report.plot_curves(str(tmp_path / "h.png"), {"train/loss": [(1, 2.0), (2, 1.0)],
                                                 "val/ua": [(2, 0.5)]})
    for name in ("c.png", "h.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

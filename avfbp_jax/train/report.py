"""What a run leaves behind for people: report JSON, PNG plots (confusion, curves), summary text."""

from collections.abc import Sequence

import numpy as np

from avfbp_jax import atomic


def write_json(path: str, data) -> None:
    """A report file (metrics, tables) as indented JSON with sorted keys, written atomically."""
    atomic.write_json(path, data, indent=2, sort_keys=True)


def _save_figure(fig, path: str) -> None:
    atomic.write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def plot_confusion(path: str, confusion: Sequence[Sequence[int]], classes: Sequence[str],
                   title: str) -> None:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save_figure(fig, path)
    plt.close(fig)


def plot_curves(path: str, history: dict[str, list[tuple[int, float]]]) -> None:
    """Training curves as a PNG: losses, accuracies, gradient norm / learning rate (log), and
    samples/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    panels = (("loss", "linear"), ("accuracy", "linear"), ("grad norm, learning rate", "log"),
              ("samples/s", "linear"))
    for name, points in sorted(history.items()):
        if not points or (name.startswith("perf/") and name != "perf/samples_per_s"):
            continue
        if name == "perf/samples_per_s":
            axis = axes[3]
        elif name.endswith("loss"):
            axis = axes[0]
        elif name.endswith(("grad_norm", "learning_rate")):
            axis = axes[2]
        else:
            axis = axes[1]
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, label=name, marker="." if len(points) < 30 else None)
    for axis, (label, scale) in zip(axes, panels, strict=True):
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.set_yscale(scale)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    _save_figure(fig, path)
    plt.close(fig)


def scores_table(results: dict[str, dict], class_names: Sequence[str]) -> str:
    """One line per split: size, WA, UA, macro-F1 and the recall of each class."""
    lines = [f"{'split':<6} {'n':>5} {'WA':>7} {'UA':>7} {'F1':>7}   recall per class"]
    for split, m in results.items():
        recalls = " ".join(
            f"{c[:7]}={m['recall'][c]:.2f}" if m["recall"][c] is not None else f"{c[:7]}=-"
            for c in class_names
        )
        lines.append(f"{split:<6} {m['num_examples']:>5} {100 * m['wa']:>6.2f}% "
                     f"{100 * m['ua']:>6.2f}% {100 * m['macro_f1']:>6.2f}%   {recalls}")
    return "\n".join(lines)


def summary(results: dict[str, dict], class_names: Sequence[str], header: str) -> str:
    """A one-screen text summary of split metrics, modality weights and the last split's
    confusion matrix."""
    lines = [header, "", scores_table(results, class_names)]
    for split, m in results.items():
        weights = m.get("modality_weights")
        if weights:
            lines.append(f"\nmodality weights on {split} (mean audio / video per true class):")
            for c, w in weights.items():
                lines.append(f"  {c:<12} audio {w['audio']:.3f}  video {w['video']:.3f}")
    if results:
        last = list(results)[-1]
        lines.append(f"\nconfusion on {last} (rows true, columns predicted):")
        lines.append(" " * 12 + " ".join(f"{c[:6]:>6}" for c in class_names))
        for c, row in zip(class_names, results[last]["confusion"], strict=True):
            lines.append(f"  {c[:10]:<10}" + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)

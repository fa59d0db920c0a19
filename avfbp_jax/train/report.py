"""What a run shows and leaves behind: progress bar, TensorBoard scalars, PNG plots, summary."""

import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np


class ProgressBar:
    """A one-line progress bar on stderr: `label [=====>    ] 120/500 12.3 it/s loss 0.91`."""

    def __init__(self, total: int, label: str = "", start: int = 0, width: int = 30, stream=None):
        self.total, self.label, self.width = max(total, 1), label, width
        self.start_count, self.count = start, start
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last_draw = 0.0
        self.open_line = False  # a drawn line not yet ended by a newline

    def update(self, count: int, text: str = "", force: bool = False) -> None:
        self.count = count
        now = time.perf_counter()
        if not force and now - self.last_draw < 0.2 and count < self.total:
            return
        self.last_draw = now
        done = int(self.width * count / self.total)
        bar = "=" * done + (">" if done < self.width else "") + " " * (self.width - done - 1)
        rate = (count - self.start_count) / max(now - self.t0, 1e-9)
        line = f"\r{self.label} [{bar}] {count}/{self.total} {rate:.1f} it/s {text}"
        self.stream.write(line[:160].ljust(100))
        self.stream.flush()
        self.open_line = True

    def close(self) -> None:
        """Draws the current count and ends the line (so other output can follow)."""
        if self.open_line or self.last_draw == 0.0:
            self.update(self.count, force=True)
            self.stream.write("\n")
            self.stream.flush()
        self.open_line = False


class TensorBoard:
    """Scalars into WORKDIR/tb (tensorboardX); a no-op on processes other than the first."""

    def __init__(self, logdir: str, enabled: bool = True):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir)

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, float(v), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_text(path: str, text: str) -> None:
    """Writes a text file atomically (temporary name, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, data) -> None:
    """Writes JSON atomically (temporary name, then rename)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _save_figure(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


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


def summary(results: dict[str, dict], class_names: Sequence[str], header: str) -> str:
    """A one-screen text summary of split metrics and modality weights."""
    lines = [header, ""]
    lines.append(f"{'split':<6} {'n':>5} {'WA':>7} {'UA':>7} {'F1':>7}   recall per class")
    for split, m in results.items():
        recalls = " ".join(
            f"{c[:7]}={m['recall'][c]:.2f}" if m["recall"][c] is not None else f"{c[:7]}=-"
            for c in class_names
        )
        lines.append(f"{split:<6} {m['num_examples']:>5} {100 * m['wa']:>6.2f}% "
                     f"{100 * m['ua']:>6.2f}% {100 * m['macro_f1']:>6.2f}%   {recalls}")
    for split, m in results.items():
        weights = m.get("modality_weights")
        if weights:
            lines.append(f"\nmodality weights on {split} (mean audio / video per true class):")
            for c, w in weights.items():
                lines.append(f"  {c:<12} audio {w['audio']:.3f}  video {w['video']:.3f}")
    last = list(results)[-1]
    cm = results[last]["confusion"]
    lines.append(f"\nconfusion on {last} (rows true, columns predicted):")
    lines.append(" " * 12 + " ".join(f"{c[:6]:>6}" for c in class_names))
    for c, row in zip(class_names, cm, strict=True):
        lines.append(f"  {c[:10]:<10}" + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)

"""The PNGs of `keras-kd reproduce`: reliability diagrams, the accuracy/ECE bar chart
and Müller et al.'s projection of penultimate-layer activations.

Figures are built on the Agg canvas directly, never through pyplot's global state, so
the command runs headless and leaves the caller's matplotlib backend alone.
"""

import numpy as np

from keras_kd import calibration
from keras_kd.cli._experiments import ROWS

RELIABILITY_ROWS = ("teacher", "student", "kd", "label_smoothing")
PROJECTION_ROWS = ("student", "label_smoothing")
BAR_CHART = "accuracy_ece.png"
PROJECTION = "penultimate_projection.png"


def reliability_file(row):
    return f"reliability_{row}.png"


def save_all(output_dir, artifacts, summary, dataset, config, seed):
    """Writes every picture; returns [(file name, caption)] in a stable order."""
    pictures = []
    for row in RELIABILITY_ROWS:
        name = reliability_file(row)
        figure = calibration.reliability_diagram(
            artifacts["test_logits"][row], dataset.y_test, num_bins=config.num_bins,
            from_logits=True, title=f"{row} (seed {seed}, test)",
        )
        _save(figure, output_dir / name)
        pictures.append((name, f"reliability diagram of `{row}` on the test split, seed {seed}"))

    _save(_bar_chart(summary), output_dir / BAR_CHART)
    pictures.append((BAR_CHART, "accuracy and ECE (before / after temperature scaling) per "
                                "row, mean ± std over seeds"))

    _save(_projection_figure(artifacts["projection"], config.projection_classes), output_dir / PROJECTION)
    classes = ", ".join(str(label) for label in config.projection_classes)
    pictures.append((PROJECTION, f"penultimate activations of classes {classes} projected on "
                                 "the plane through their class templates (Müller et al. "
                                 f"2019, fig. 1), `student` vs `label_smoothing`, seed {seed}"))
    return pictures


def template_plane_projection(features, kernel, bias, classes):
    """Penultimate activations in the plane through three class templates.

    The logits are `z_k = x . w_k + b_k = [x, 1] . [w_k, b_k]`, so class k's template
    is the column `[w_k, b_k]` of the last layer and `z_k` measures closeness to it
    (Müller et al. 2019, section 2). With the templates `t_a, t_b, t_c` of `classes`
    and an orthonormal basis `Q` of span(t_b - t_a, t_c - t_a), an activation x maps
    to `([x, 1] - t_a) Q`.

    Args:
        features: penultimate activations, shape (N, D).
        kernel: last-layer kernel, shape (D, K).
        bias: last-layer bias, shape (K,).
        classes: three class indices.

    Returns:
        (points, template_points): arrays of shape (N, 2) and (3, 2).
    """
    features = np.asarray(features, dtype=np.float64)
    augmented = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    templates = np.concatenate([kernel, np.asarray(bias)[np.newaxis]], axis=0)
    templates = np.asarray(templates, dtype=np.float64)[:, list(classes)].T
    origin = templates[0]
    basis, _ = np.linalg.qr((templates[1:] - origin).T)
    return (augmented - origin) @ basis, (templates - origin) @ basis


def _projection_figure(projection, classes):
    figure = _figure(figsize=(10, 9))
    axes = figure.subplots(len(PROJECTION_ROWS), 2, squeeze=False)
    colors = ("tab:blue", "tab:orange", "tab:green")
    for row_index, row in enumerate(PROJECTION_ROWS):
        inputs = projection[row]
        for column, split in enumerate(("train", "test")):
            ax = axes[row_index][column]
            labels = inputs[f"{split}_labels"]
            chosen = np.isin(labels, classes)
            points, template_points = template_plane_projection(
                inputs[f"{split}_features"][chosen], inputs["kernel"], inputs["bias"], classes
            )
            for label, color in zip(classes, colors):
                here = labels[chosen] == label
                ax.scatter(points[here, 0], points[here, 1], s=8, alpha=0.6, color=color,
                           label=f"class {label}")
            ax.scatter(template_points[:, 0], template_points[:, 1], marker="*", s=160,
                       color="black", label="templates")
            ax.set_title(f"{row}: {split}")
            ax.set_aspect("equal", adjustable="datalim")
            ax.legend(loc="best", fontsize="small")
    figure.suptitle("Penultimate layer projected on the plane through three class templates")
    return figure


def _bar_chart(summary):
    figure = _figure(figsize=(12, 4.5))
    accuracy_ax, ece_ax = figure.subplots(1, 2)
    positions = np.arange(len(ROWS))

    def stats(metric):
        values = [summary[row].get(metric, {"mean": np.nan, "std": 0.0}) for row in ROWS]
        return np.array([v["mean"] for v in values]), np.array([v["std"] for v in values])

    mean, std = stats("accuracy")
    accuracy_ax.bar(positions, mean, yerr=std, color="tab:blue", capsize=3)
    low = np.nanmin(mean - std) if np.any(np.isfinite(mean)) else 0.0
    accuracy_ax.set_ylim(max(0.0, low - 0.02), 1.0)
    accuracy_ax.set_title("test accuracy")
    width = 0.4
    for offset, metric, label, color in ((-width / 2, "ece", "ECE", "tab:red"),
                                         (width / 2, "ece_temperature_scaled",
                                          "ECE after temperature scaling", "tab:gray")):
        mean, std = stats(metric)
        ece_ax.bar(positions + offset, mean, width, yerr=std, color=color, label=label, capsize=3)
    ece_ax.set_title("test ECE (lower is better)")
    ece_ax.legend()
    for ax in (accuracy_ax, ece_ax):
        ax.set_xticks(positions)
        ax.set_xticklabels(ROWS, rotation=45, ha="right")
    return figure


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(figure, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)

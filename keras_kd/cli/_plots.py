"""The PNGs of `keras-kd reproduce`: reliability diagrams, the accuracy/ECE bar chart
and Müller et al.'s projection of penultimate-layer activations.

Figures are built on the Agg canvas directly, never through pyplot's global state, so
the command runs headless and leaves the caller's matplotlib backend alone.
"""

import io

import numpy as np

from keras_kd import calibration
from keras_kd.cli import _extras
from keras_kd.cli import _io
from keras_kd.cli._experiments import ROW_TABLE

RELIABILITY_ROWS = ("teacher", "student", "kd", "label_smoothing", "mlp_student",
                    "mlp_label_smoothing")
PROJECTION_ROWS = ("student", "label_smoothing")
BAR_CHART = "accuracy_ece.png"
PROJECTION = "penultimate_projection.png"
# Bar colours by architecture, explained by the chart's legend.
_ARCHITECTURE_COLORS = {"teacher": "tab:purple", "student": "tab:blue", "mlp": "tab:orange"}
_ARCHITECTURE_LABELS = {"teacher": "teacher architecture", "student": "thin CNN student",
                        "mlp": "MLP student"}


def reliability_file(row):
    return f"reliability_{row}.png"


def save_all(output_dir, artifacts, summary, dataset, config, seed):
    """Writes every picture (atomically); returns [(file name, caption)], stable order."""
    _extras.require("matplotlib", "the pictures of `keras-kd reproduce`")
    pictures = []
    figures = {
        row: calibration.reliability_diagram(
            artifacts["test"][row], dataset.y_test, num_bins=config.num_bins,
            from_logits=True, title=row,
        )
        for row in RELIABILITY_ROWS
    }
    # The same count axis on every diagram, so their histograms compare at a glance:
    # log-scaled on all when the library log-scaled one (a confident model's top bin
    # dwarfs the others), whose lower limit is then positive. The library puts the
    # legend above the panels, where it covers no bar.
    count_axes = [figure.axes[1] for figure in figures.values()]
    if any(ax.get_yscale() == "log" for ax in count_axes):
        for ax in count_axes:
            ax.set_yscale("log")
    lowest = min(ax.get_ylim()[0] for ax in count_axes)
    highest = max(ax.get_ylim()[1] for ax in count_axes)
    for row, figure in figures.items():
        # Wide enough for the longest row name plus the ECE in the title.
        figure.set_size_inches(6.0, 6.0)
        figure.axes[1].set_ylim(lowest, highest)
        name = reliability_file(row)
        _save(figure, output_dir / name)
        pictures.append((name, f"reliability diagram of `{row}` on the test split, seed {seed} "
                               "(every diagram on the same axes)"))

    _save(_bar_chart(summary), output_dir / BAR_CHART)
    pictures.append((BAR_CHART, "accuracy and ECE (before / after temperature scaling) per "
                                "row, mean ± std over seeds"))

    _save(_projection_figure(artifacts["projection"], config.projection_classes),
          output_dir / PROJECTION)
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
    figure = _figure(figsize=(10, 9.5))
    # Shared axes within each split (column): the two models are compared on the
    # same scale, which is what shows label smoothing's tighter clusters.
    axes = figure.subplots(len(PROJECTION_ROWS), 2, squeeze=False, sharex="col", sharey="col")
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
                ax.scatter(points[here, 0], points[here, 1], s=6, alpha=0.5, color=color,
                           label=f"class {label}", rasterized=True)
            ax.scatter(template_points[:, 0], template_points[:, 1], marker="*", s=200,
                       color="black", edgecolor="white", label="class templates")
            ax.set_title(f"{row}: {split} split")
    handles, labels = axes[0][0].get_legend_handles_labels()
    # One legend for all panels, below them, never over the data.
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    figure.suptitle("Penultimate layer projected on the plane through three class templates "
                    "(Müller et al. 2019)")
    return figure


def _bar_chart(summary):
    rows = [row for row in ROW_TABLE if row.name in summary]
    figure = _figure(figsize=(12, 0.32 * len(rows) + 2.2))
    accuracy_ax, ece_ax = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(rows))[::-1]  # the table's order, top to bottom

    def stats(metric):
        values = [summary[row.name].get(metric, {"mean": np.nan, "std": 0.0}) for row in rows]
        return np.array([v["mean"] for v in values]), np.array([v["std"] for v in values])

    mean, std = stats("accuracy")
    colors = [_ARCHITECTURE_COLORS[row.architecture] for row in rows]
    accuracy_ax.barh(positions, mean, xerr=std, color=colors, capsize=2)
    low = np.nanmin(mean - std) if np.any(np.isfinite(mean)) else 0.0
    accuracy_ax.set_xlim(max(0.0, low - 0.05), 1.0)
    accuracy_ax.set_title("test accuracy (higher is better)")
    accuracy_ax.set_yticks(positions, [row.name for row in rows])
    architectures = list(dict.fromkeys(row.architecture for row in rows))
    patches = [_patch(_ARCHITECTURE_COLORS[name], _ARCHITECTURE_LABELS[name])
               for name in architectures]

    height = 0.4
    for offset, metric, label, color in ((height / 2, "ece", "ECE", "tab:red"),
                                         (-height / 2, "ece_temperature_scaled",
                                          "ECE after temperature scaling", "tab:gray")):
        mean, std = stats(metric)
        ece_ax.barh(positions + offset, mean, height, xerr=std, color=color, label=label,
                    capsize=2)
    ece_ax.set_title("test ECE (lower is better)")
    ece_ax.set_xlim(0.0, None)
    for ax in (accuracy_ax, ece_ax):
        ax.grid(axis="x", alpha=0.3)
    handles, labels = ece_ax.get_legend_handles_labels()
    # Legends below the panels: with many rows any spot inside would cover a bar.
    figure.legend(patches + handles, [p.get_label() for p in patches] + labels,
                  loc="outside lower center", ncols=len(patches) + len(handles))
    figure.suptitle("Accuracy and ECE per row (mean ± std over seeds)")
    return figure


def _patch(color, label):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(figure, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _io.atomic_write_bytes(path, buffer.getvalue())

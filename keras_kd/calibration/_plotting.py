"""Reliability diagrams: one model, or several side by side, each with the
confidence histogram under it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from typing import Any
from typing import Optional
from typing import Union

import numpy as np
from keras import ops

from keras_kd import _binning
from keras_kd import _validation
from keras_kd.calibration import _inputs
from keras_kd._types import TensorLike

if TYPE_CHECKING:  # matplotlib is imported lazily, where a figure is drawn
    import matplotlib.axes
    import matplotlib.figure


def _import_matplotlib_figure():
    try:
        import matplotlib.figure
    except ImportError as error:
        raise ImportError(
            "reliability_diagram needs matplotlib: pip install keras-kd[plots]"
        ) from error
    return matplotlib.figure


def _bins(probs, labels, num_bins, from_logits, sample_weight):
    predictions, targets, weights = _inputs.prepared(probs, labels, from_logits, sample_weight)
    counts, confidence_sums, correct_sums = (
        ops.convert_to_numpy(s)
        for s in _binning.bin_statistics(
            ops.convert_to_tensor(predictions.astype(np.float32)),
            ops.convert_to_tensor(targets.astype(np.float32)),
            num_bins,
            ops.convert_to_tensor(weights.astype(np.float32)),
            from_logits=from_logits,
        )
    )
    ece = float(ops.convert_to_numpy(
        _binning.calibration_error(counts, confidence_sums, correct_sums, "l1")
    ))
    return counts, confidence_sums, correct_sums, ece


def _draw(top, histogram_ax, statistics, num_bins, title, twin, legend=True):
    counts, confidence_sums, correct_sums, ece = statistics
    nonempty = counts > 0
    safe_counts = np.where(nonempty, counts, 1.0)
    accuracy = np.where(nonempty, correct_sums / safe_counts, 0.0)
    confidence = np.where(nonempty, confidence_sums / safe_counts, 0.0)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    width = 1.0 / num_bins
    top.bar(edges[:-1], accuracy, width=width, align="edge", color="tab:blue",
            edgecolor="black", label="accuracy")
    # Gap boxes from acc_b to conf_b, only where the bin has examples.
    # Hatched outlines, not a translucent fill: where accuracy exceeds confidence the
    # box lies over the bar, and a fill would blend into a colour no legend names.
    top.bar(edges[:-1][nonempty], (confidence - accuracy)[nonempty], width=width,
            bottom=accuracy[nonempty], align="edge", facecolor="none",
            edgecolor="tab:red", hatch="//", linewidth=1.2, label="gap to confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    if legend:
        # Inside the user's own axes: over-confident models leave the upper left
        # empty. Figures made here put one legend outside every diagram instead.
        top.legend(loc="upper left", fontsize="small", framealpha=0.9)
    heading = f"ECE = {ece:.4f} ({num_bins} bins)"
    top.set_title(f"{title}: {heading}" if title else heading, fontsize="medium")
    histogram_ax.bar(edges[:-1], counts, width=width, align="edge",
                     color="gray", alpha=0.3 if twin else 0.8, edgecolor="black")
    histogram_ax.set_ylabel("count (weighted)")
    nonzero = counts[counts > 0]
    if nonzero.size and nonzero.max() > 100 * nonzero.min():
        # Confident models put most examples in the top bin; a log scale keeps the
        # other bins visible.
        histogram_ax.set_yscale("log")
    if twin:
        top.set_xlabel("confidence")
    else:
        histogram_ax.set_xlabel("confidence")
        histogram_ax.set_xlim(0, 1)


def reliability_diagram(
    probs: TensorLike,
    labels: TensorLike,
    num_bins: int = 15,
    ax: Optional["matplotlib.axes.Axes"] = None,
    from_logits: bool = False,
    title: Optional[str] = None,
    sample_weight: Optional[TensorLike] = None,
) -> "matplotlib.figure.Figure":
    """Draws accuracy against confidence per bin, with the gap to the diagonal shaded.

    Bars show `acc_b` for each equal-width bin (same bins as
    `expected_calibration_error`), the dashed diagonal is perfect calibration, and
    the shaded boxes between `acc_b` and `conf_b` are the gaps the ECE averages.
    Below it (or on a twin axis when `ax` is given) a histogram shows the share of
    examples (total weight) in each confidence bin. The ECE is in the title.

    Needs matplotlib (`pip install keras-kd[plots]`). Without `ax`, it builds a
    standalone `matplotlib.figure.Figure` on the Agg canvas, never touching pyplot's
    global state, so it works headless and in threads; `fig.savefig("x.png")`.

    Args:
        probs: probabilities (or logits with `from_logits=True`), shape (N, K),
            (N, 1) or (N,) (binary).
        labels: class indices (N,) / (N, 1) or one-hot targets (N, K).
        num_bins: B, an integer >= 1, default 15.
        ax: optional matplotlib Axes to draw into; the histogram then goes on a twin
            y-axis.
        from_logits: bool, default False.
        title: optional title, to which ": ECE = ..." is appended.
        sample_weight: optional finite non-negative weights (N,); 0 masks an example.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> fig = reliability_diagram(model.predict(x_val), y_val, from_logits=True)
        >>> fig.savefig("reliability.png")

    References:
        DeGroot, Fienberg. The Comparison and Evaluation of Forecasters. 1983;
        Guo et al. ICML 2017, figure 1.
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    figure_module = _import_matplotlib_figure()
    statistics = _bins(probs, labels, num_bins, from_logits, sample_weight)
    if ax is None:
        figure = figure_module.Figure(figsize=(5, 6.3), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        _draw(top, bottom, statistics, num_bins, title, twin=False, legend=False)
        _figure_legend(figure, top)
        return figure
    figure, top = ax.figure, ax
    histogram_ax = ax.twinx()
    # A twin axis is drawn on top; put the histogram behind the bars instead.
    top.set_zorder(histogram_ax.get_zorder() + 1)
    top.patch.set_visible(False)
    _draw(top, histogram_ax, statistics, num_bins, title, twin=True)
    return figure


def reliability_diagrams(
    predictions: dict,
    labels: TensorLike,
    num_bins: int = 15,
    from_logits: bool = False,
    sample_weight: Optional[TensorLike] = None,
) -> "matplotlib.figure.Figure":
    """Several models' reliability diagrams side by side, one shared label set.

    Args:
        predictions: a dict `{name: probs or logits}` (insertion order is the
            column order), each (N, K), (N, 1) or (N,).
        labels, num_bins, from_logits, sample_weight: as in `reliability_diagram`;
            `from_logits` may also be a dict by name.

    Returns:
        A `matplotlib.figure.Figure` with one column per model, the histogram of
        confidences under each diagram.

    Example:
        >>> reliability_diagrams({"raw": logits, "calibrated": scaler.transform(logits)},
        ...                      y_test, from_logits=True).savefig("compare.png")
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    if not isinstance(predictions, dict) or not predictions:
        raise ValueError(
            f"`predictions` must be a non-empty dict {{name: array}}, got "
            f"{type(predictions).__name__}."
        )
    figure_module = _import_matplotlib_figure()
    columns = min(len(predictions), 3)
    rows = -(-len(predictions) // columns)
    figure = figure_module.Figure(figsize=(4.2 * columns, 5.6 * rows), layout="constrained")
    axes = figure.subplots(2 * rows, columns, height_ratios=[3, 1] * rows, squeeze=False)
    for index, (name, probs) in enumerate(predictions.items()):
        logits = from_logits[name] if isinstance(from_logits, dict) else from_logits
        statistics = _bins(probs, labels, num_bins, logits, sample_weight)
        row, column = 2 * (index // columns), index % columns
        _draw(axes[row, column], axes[row + 1, column], statistics, num_bins, str(name),
              twin=False, legend=False)
    for index in range(len(predictions), rows * columns):  # unused cells of the grid
        row, column = 2 * (index // columns), index % columns
        axes[row, column].set_visible(False)
        axes[row + 1, column].set_visible(False)
    _figure_legend(figure, axes[0, 0])
    return figure


def _figure_legend(figure, ax):
    """One legend above every diagram, so that it never covers a bar."""
    handles, names = ax.get_legend_handles_labels()
    figure.legend(handles, names, loc="outside upper center", ncols=3, fontsize="small")


def save_reliability_diagram(
    path: Union[str, os.PathLike],
    probs: TensorLike,
    labels: TensorLike,
    **kwargs: Any,
) -> None:
    """Writes `reliability_diagram(probs, labels, **kwargs)` to `path` (PNG)."""
    figure = reliability_diagram(probs, labels, **kwargs)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path

"""results.json and results.md of `keras-kd reproduce`: summaries and findings.

The findings are computed from the numbers, never written in advance: each compares
two models (or one before and after temperature scaling) seed by seed, on the same
test examples, and decides the published claim from a 95 % interval that combines the
spread over seeds (Student's t) and a bootstrap over test examples.
"""

import dataclasses
import json
import math
import platform
import statistics
import sys

import numpy as np

from keras_kd.cli import _io
from keras_kd.cli import _statistics
from keras_kd.cli._experiments import METRICS
from keras_kd.cli._experiments import ROW_DESCRIPTIONS
from keras_kd.cli._experiments import ROWS

COLUMN_TITLES = {
    "accuracy": "accuracy",
    "nll": "NLL",
    "ece": "ECE",
    "ece_temperature_scaled": "ECE (TS)",
    "temperature": "T (TS)",
    "parameters": "params",
    "training_seconds": "train s",
}
_DECIMALS = {"accuracy": 4, "nll": 3, "ece": 4, "ece_temperature_scaled": 4,
             "temperature": 2, "training_seconds": 1}
# Effects smaller than these are no effect: an interval inside ±NEGLIGIBLE rules the
# claim out rather than leaving it undecided.
NEGLIGIBLE = {"accuracy": 0.005, "ece": 0.005, "ece_temperature_scaled": 0.005}
# The calibration claims are measurable when the baseline's ECE is this many times
# the test split's noise floor (issue 14's bar).
MEASURABLE_FACTOR = 3.0
VERDICTS = ("reproduced", "not reproduced", "too noisy to tell")
# A verdict needs the spread over seeds as well as over test examples.
MIN_SEEDS = 2


@dataclasses.dataclass(frozen=True)
class Claim:
    """`metric` of model `model` should be `direction` than `baseline_metric` of
    `baseline` (models are rows or helpers: `ls_teacher`, `poor_teacher`)."""

    claim: str
    source: str
    model: str
    metric: str
    baseline: str
    baseline_metric: str
    direction: str  # "higher" or "lower"


def _kd_claims(prefix, label):
    return (
        Claim(f"KD beats the scratch {label}", "Hinton et al. 2015",
              f"{prefix}kd", "accuracy", f"{prefix}student", "accuracy", "higher"),
        Claim(f"Label smoothing lowers the {label}'s ECE", "Müller et al. 2019",
              f"{prefix}label_smoothing", "ece", f"{prefix}student", "ece", "lower"),
        Claim(f"Temperature scaling lowers the {label}'s ECE", "Guo et al. 2017",
              f"{prefix}student", "ece_temperature_scaled", f"{prefix}student", "ece", "lower"),
        Claim(f"A label-smoothed teacher distils worse into the {label} than the plain "
              "teacher", "Müller et al. 2019", f"{prefix}ls_teacher_kd", "accuracy",
              f"{prefix}kd", "accuracy", "lower"),
    )


def _modern_claims(prefix, label):
    # The modern methods' own claim: each beats Hinton's KD (here: tuned on the
    # validation split) on the same student; authors' CIFAR-100 gains are 1-3 points.
    return (
        Claim(f"DKD beats KD on the {label}", "Zhao et al. 2022", f"{prefix}dkd", "accuracy",
              f"{prefix}kd", "accuracy", "higher"),
        Claim(f"DIST beats KD on the {label}", "Huang et al. 2022", f"{prefix}dist",
              "accuracy", f"{prefix}kd", "accuracy", "higher"),
        Claim(f"KD on standardized logits beats KD on the {label}", "Sun et al. 2024",
              f"{prefix}kd_standardized", "accuracy", f"{prefix}kd", "accuracy", "higher"),
    )


# One entry per finding; a new row's claim is one more entry here.
CLAIMS = (
    Claim("The teacher is more accurate than the thin student (design check)", "setup",
          "teacher", "accuracy", "student", "accuracy", "higher"),
    *_kd_claims("", "thin student"),
    Claim("Temperature scaling lowers the teacher's ECE", "Guo et al. 2017",
          "teacher", "ece_temperature_scaled", "teacher", "ece", "lower"),
    Claim("A label-smoothed teacher is better calibrated than the plain teacher",
          "Müller et al. 2019", "ls_teacher", "ece", "teacher", "ece", "lower"),
    Claim("Tf-KD_reg (virtual teacher) beats the scratch student", "Yuan et al. 2020",
          "tfkd_reg", "accuracy", "student", "accuracy", "higher"),
    Claim("Tf-KD_self (born-again) beats the scratch student", "Yuan et al. 2020",
          "tfkd_self", "accuracy", "student", "accuracy", "higher"),
    Claim("Re-KD: the thin student improves the teacher architecture", "Yuan et al. 2020",
          "re_kd", "accuracy", "teacher", "accuracy", "higher"),
    Claim("De-KD: a poorly trained teacher still improves the student", "Yuan et al. 2020",
          "de_kd", "accuracy", "student", "accuracy", "higher"),
    Claim("FitNets hints plus KD beat the scratch student", "Romero et al. 2015",
          "fitnets", "accuracy", "student", "accuracy", "higher"),
    *_kd_claims("mlp_", "MLP student"),
    Claim("Tf-KD_reg (virtual teacher) beats the scratch MLP student", "Yuan et al. 2020",
          "mlp_tfkd_reg", "accuracy", "mlp_student", "accuracy", "higher"),
    Claim("KD helps the thin student more than the MLP (capacity gap)",
          "Mirzadeh et al. 2020", "kd", "accuracy", "mlp_kd", "accuracy", "higher"),
    *_modern_claims("", "thin student"),
    *_modern_claims("mlp_", "MLP student"),
)


def summarize(records):
    """{row: {metric: {"mean", "std", "n"}}} over seeds; missing values are skipped."""
    summary = {}
    for row in ROWS:
        row_records = [record for record in records if record.row == row]
        summary[row] = {}
        for metric in METRICS + ("nll_temperature_scaled", "ece_noise_floor", "teacher_accuracy",
                                 "teacher_ece"):
            values = [getattr(r, metric) for r in row_records if getattr(r, metric) is not None]
            if values:
                summary[row][metric] = {"mean": statistics.fmean(values), "std": _std(values),
                                        "n": len(values)}
    return summary


def findings(outputs, labels, num_bins, bootstrap_samples, claims=CLAIMS, seed=0):
    """Each claim decided from its paired differences over seeds and test examples.

    Args:
        outputs: {seed: {"test": {model: test logits}, "temperature": {model: T}}}.
        labels: the test labels.
        num_bins: ECE bins.
        bootstrap_samples: resamples of the test split (the same resamples for every
            model and seed, so the comparison stays paired).

    Returns:
        One dict per claim: the mean difference over seeds, the half-widths of its
        95 % intervals over seeds (t) and over test examples (bootstrap percentile),
        their combination `sqrt(seeds^2 + bootstrap^2)`, and the verdict.
    """
    seeds = sorted(outputs)
    counts = _statistics.bootstrap_counts(len(labels), bootstrap_samples, seed)
    cache = {}

    def value(model, metric, seed_, resampled):
        key = (model, metric, seed_, resampled)
        if key not in cache:
            cache[key] = _statistics.measure(
                outputs[seed_]["test"][model], labels, metric, num_bins,
                counts=counts if resampled else None,
                temperature=outputs[seed_]["temperature"].get(model),
            )
        return cache[key]

    results = []
    for claim in claims:
        differences, resampled = [], []
        for seed_ in seeds:
            pair = [value(claim.model, claim.metric, seed_, False),
                    value(claim.baseline, claim.baseline_metric, seed_, False)]
            if any(side is None for side in pair):
                continue
            differences.append(float(pair[0][0] - pair[1][0]))
            resampled.append(value(claim.model, claim.metric, seed_, True)
                             - value(claim.baseline, claim.baseline_metric, seed_, True))
        result = {
            "claim": claim.claim,
            "source": claim.source,
            "compared": f"{claim.model}.{claim.metric} - {claim.baseline}.{claim.baseline_metric}",
            "direction": claim.direction,
            "seeds": len(differences),
            "mean_difference": None,
            "interval": None,
            "verdict": "too noisy to tell",
        }
        if differences:
            mean = statistics.fmean(differences)
            # The bootstrap distribution of the mean over seeds.
            low, high = np.percentile(np.mean(resampled, axis=0), [2.5, 97.5])
            bootstrap = float(high - low) / 2.0
            seed_width = _statistics.seed_half_width(differences)
            half_width = math.hypot(seed_width or 0.0, bootstrap)
            result.update(
                mean_difference=mean,
                differences=differences,
                seed_half_width=seed_width,
                bootstrap_half_width=bootstrap,
                half_width=half_width,
                interval=[mean - half_width, mean + half_width],
                # One seed says nothing about seed-to-seed noise, which on these models
                # is often the larger part: no verdict from it.
                verdict=(_statistics.verdict(mean, half_width, claim.direction,
                                             NEGLIGIBLE[claim.metric])
                         if len(differences) >= MIN_SEEDS else "too noisy to tell"),
            )
        result["reproduced"] = result["verdict"] == "reproduced"
        results.append(result)
    return results


def measurability(records):
    """The scratch students' and the teacher's ECE against the test split's noise floor:
    the calibration claims need ECE well above it (MEASURABLE_FACTOR times)."""
    rows = {}
    for row in ("student", "mlp_student", "teacher"):
        chosen = [record for record in records if record.row == row]
        if not chosen:
            continue
        ece = statistics.fmean(record.ece for record in chosen)
        floor = statistics.fmean(record.ece_noise_floor for record in chosen)
        rows[row] = {"ece": ece, "noise_floor": floor,
                     "ratio": ece / floor if floor > 0 else math.inf,
                     "measurable": ece >= MEASURABLE_FACTOR * floor}
    return rows


def library_versions():
    import keras
    import numpy

    import keras_kd

    versions = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "keras_kd": keras_kd.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
    }
    for module_name in ("tensorflow", "sklearn", "matplotlib", "tensorflow_datasets", "mnist1d"):
        module = sys.modules.get(module_name)
        if module is None:
            continue  # not used by this run; importing it now would only cost time
        versions[module_name] = getattr(module, "__version__", _distribution_version(module_name))
    return versions


def write_json(path, *, config, dataset, records, summary, checks, command, wall_seconds,
               hyperparameters, measurable, machine):
    payload = {
        "command": command,
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "description": dataset.description,
                    "num_classes": dataset.num_classes, "sizes": dataset.sizes()},
        "versions": library_versions(),
        "machine": machine,
        "rows": {row: ROW_DESCRIPTIONS[row] for row in ROWS},
        "hyperparameters": hyperparameters,
        "records": [_json_safe(dataclasses.asdict(record)) for record in records],
        "summary": _json_safe(summary),
        "measurability": _json_safe(measurable),
        "findings": _json_safe(checks),
        "wall_seconds": wall_seconds,
    }
    _io.atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def results_table(summary, rows=ROWS):
    """The markdown table: one line per row, mean ± std over seeds."""
    header = "| row | " + " | ".join(COLUMN_TITLES[m] for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for row in rows:
        cells = [_cell(summary[row].get(metric), metric) for metric in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings_markdown(checks):
    lines = []
    for check in checks:
        if check["mean_difference"] is None:
            lines.append(f"- **not measured**: {check['claim']} ({check['source']}).")
            continue
        seeds = (f"seeds ±{check['seed_half_width']:.4f}" if check["seed_half_width"] is not None
                 else f"one seed: test-sampling noise only, no verdict below {MIN_SEEDS} seeds")
        low, high = check["interval"]
        # `+ 0.0` turns a rounding-level -0.0 into 0.0 for display.
        lines.append(
            f"- **{check['verdict']}**: {check['claim']} ({check['source']}). "
            f"`{check['compared']}` = {round(check['mean_difference'], 4) + 0.0:+.4f}, "
            f"95 % interval [{low:+.4f}, {high:+.4f}] ({seeds}, test bootstrap "
            f"±{check['bootstrap_half_width']:.4f}; {check['seeds']} seed(s))."
        )
    return "\n".join(lines)


def measurability_markdown(measurable):
    lines = []
    for row, entry in measurable.items():
        state = ("measurable" if entry["measurable"]
                 else f"below {MEASURABLE_FACTOR:g}x: calibration effects hard to measure")
        lines.append(f"- `{row}`: ECE {entry['ece']:.4f} = {entry['ratio']:.1f} x the noise "
                     f"floor {entry['noise_floor']:.4f} ({state}).")
    return "\n".join(lines)


def hyperparameters_markdown(hyperparameters):
    return "\n".join(f"- `{key}` = {entry['value']!r}: {entry['how']}."
                     for key, entry in hyperparameters.items())


def write_markdown(path, *, config, dataset, summary, checks, pictures, command, wall_seconds,
                   hyperparameters, measurable, machine, quick=False):
    seeds = ", ".join(str(seed) for seed in config.seed_list)
    banner = (
        f"**Quick run** ({config.seeds} seed, {config.epochs} epochs, no tuning): a smoke "
        "run and a first look. The models are under-trained; run without `--quick` for "
        "the findings.\n\n" if quick else ""
    )
    sizes = dataset.sizes()
    counts = {verdict: sum(check["verdict"] == verdict for check in checks)
              for verdict in VERDICTS}
    tally = ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
    text = f"""# keras-kd reproduce

`{command}`

{banner}Data: {dataset.description}; train {sizes['train']:,}, validation {sizes['validation']:,}
(hyperparameters and temperature scaling only), test {sizes['test']:,} (every number below).
Seeds: {seeds}. Mean ± standard deviation over seeds; wall time {wall_seconds / 60:.1f} min on
{machine['cpus']} CPU core(s), load average {machine['load_average_start']} at the start and
{machine['load_average_end']} at the end.

{results_table(summary)}

Columns: test accuracy; NLL (mean negative log-likelihood); ECE ({config.num_bins}
equal-width bins); ECE (TS) after temperature scaling fitted on the validation split;
T (TS) the fitted temperature (> 1: the model was over-confident); parameters; seconds
of the row's own training (its teacher's not included).

## Rows

{chr(10).join(f"- `{row}`: {ROW_DESCRIPTIONS[row]}" for row in ROWS)}

## How the hyperparameters were chosen

Never on the test split.

{hyperparameters_markdown(hyperparameters)}

## Is calibration measurable here?

The noise floor is the mean ECE that a perfectly calibrated model with the same
confidences shows on this test split ({sizes['test']:,} examples): sampling noise alone.

{measurability_markdown(measurable)}

## Findings ({tally})

Each line is a difference between two models, paired seed by seed on the same test
examples: its mean over seeds and a 95 % interval combining the seeds' spread
(Student's t) with a bootstrap over test examples ({config.bootstrap_samples} resamples).
**reproduced**: the interval excludes 0 on the claimed side; **not reproduced**: it
lies on the other side, or within ±{NEGLIGIBLE['accuracy']} (accuracy) /
±{NEGLIGIBLE['ece']} (ECE) of 0, an effect too small to matter; otherwise, or with fewer
than {MIN_SEEDS} seeds, **too noisy to tell**.

{findings_markdown(checks)}

## Pictures

{chr(10).join(f"- [{name}]({name}): {caption}" for name, caption in pictures)}
"""
    _io.atomic_write_text(path, text)
    return text


def _distribution_version(module_name):
    from importlib import metadata

    try:
        return metadata.version(module_name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _cell(statistic, metric):
    if statistic is None:
        return "n/a"
    if metric == "parameters":
        return f"{round(statistic['mean']):,}"
    decimals = _DECIMALS[metric]
    return f"{statistic['mean']:.{decimals}f} ± {statistic['std']:.{decimals}f}"


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _json_safe(value):
    """Python floats (NumPy scalars converted); non-finite numbers become None."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

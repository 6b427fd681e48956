"""results.json and results.md of `keras-kd reproduce`: summaries and findings.

The findings are computed from the numbers, never written in advance: each compares
two rows (or a row before and after temperature scaling) seed by seed, and says
whether the published direction held on this run.
"""

import dataclasses
import json
import math
import platform
import statistics
import sys

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
_TIE = 1e-9
# An ECE within this factor of its perfectly-calibrated floor is sampling noise.
_AT_FLOOR = 1.5
_DECIMALS = {"accuracy": 4, "nll": 3, "ece": 4, "ece_temperature_scaled": 4,
             "temperature": 2, "training_seconds": 1}


@dataclasses.dataclass(frozen=True)
class _Claim:
    """`value(row, metric)` should be `direction` than `value(baseline, baseline_metric)`."""

    claim: str
    source: str
    row: str
    metric: str
    baseline: str
    baseline_metric: str
    direction: str  # "higher" or "lower"


CLAIMS = (
    _Claim("The teacher is more accurate than the scratch student (design check)",
           "setup", "teacher", "accuracy", "student", "accuracy", "higher"),
    _Claim("KD beats the scratch student", "Hinton et al. 2015",
           "kd", "accuracy", "student", "accuracy", "higher"),
    _Claim("Label smoothing lowers the student's ECE", "Müller et al. 2019",
           "label_smoothing", "ece", "student", "ece", "lower"),
    _Claim("Temperature scaling lowers the student's ECE", "Guo et al. 2017",
           "student", "ece_temperature_scaled", "student", "ece", "lower"),
    _Claim("Temperature scaling lowers the teacher's ECE", "Guo et al. 2017",
           "teacher", "ece_temperature_scaled", "teacher", "ece", "lower"),
    _Claim("Tf-KD_reg (virtual teacher) beats the scratch student", "Yuan et al. 2020",
           "tfkd_reg", "accuracy", "student", "accuracy", "higher"),
    _Claim("Tf-KD_self (born-again) beats the scratch student", "Yuan et al. 2020",
           "tfkd_self", "accuracy", "student", "accuracy", "higher"),
    _Claim("Re-KD: the student improves the teacher architecture", "Yuan et al. 2020",
           "re_kd", "accuracy", "teacher", "accuracy", "higher"),
    _Claim("De-KD: a poorly trained teacher still improves the student", "Yuan et al. 2020",
           "de_kd", "accuracy", "student", "accuracy", "higher"),
    _Claim("A label-smoothed teacher is better calibrated than the plain teacher",
           "Müller et al. 2019", "ls_teacher_kd", "teacher_ece", "teacher", "ece", "lower"),
    _Claim("...but distils worse than the plain teacher", "Müller et al. 2019",
           "ls_teacher_kd", "accuracy", "kd", "accuracy", "lower"),
    _Claim("FitNets hints plus KD beat the scratch student", "Romero et al. 2015",
           "fitnets", "accuracy", "student", "accuracy", "higher"),
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


def findings(records):
    """Each claim checked seed by seed: the mean paired difference and its spread."""
    by_key = {(r.row, r.seed): r for r in records}
    seeds = sorted({r.seed for r in records})
    results = []
    for claim in CLAIMS:
        differences = []
        for seed in seeds:
            value = getattr(by_key[(claim.row, seed)], claim.metric)
            baseline = getattr(by_key[(claim.baseline, seed)], claim.baseline_metric)
            if value is not None and baseline is not None:
                differences.append(value - baseline)
        wanted = 1.0 if claim.direction == "higher" else -1.0
        if differences:
            mean_difference = statistics.fmean(differences)
            spread = _std(differences)
            # Accuracies are multiples of 1 / N: a tie must not pass on rounding.
            reproduced = wanted * mean_difference > _TIE
            within_noise = len(differences) > 1 and abs(mean_difference) <= spread
        else:
            mean_difference = spread = None
            reproduced = within_noise = False
        baselines = [by_key[(claim.baseline, seed)] for seed in seeds]
        results.append({
            "claim": claim.claim,
            "source": claim.source,
            "compared": f"{claim.row}.{claim.metric} - {claim.baseline}.{claim.baseline_metric}",
            "mean_difference": mean_difference,
            "std_difference": spread,
            "seeds": len(differences),
            "reproduced": reproduced,
            "within_seed_noise": within_noise,
            "calibration_context": _calibration_context(claim, baselines),
        })
    return results


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
    for module_name in ("tensorflow", "sklearn", "matplotlib", "tensorflow_datasets"):
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = __import__(module_name)
            except ImportError:
                continue
        versions[module_name] = getattr(module, "__version__", "unknown")
    return versions


def write_json(path, *, config, dataset, records, summary, checks, command, wall_seconds):
    payload = {
        "command": command,
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "description": dataset.description,
                    "num_classes": dataset.num_classes, "sizes": dataset.sizes()},
        "versions": library_versions(),
        "rows": {row: ROW_DESCRIPTIONS[row] for row in ROWS},
        "records": [_json_safe(dataclasses.asdict(record)) for record in records],
        "summary": _json_safe(summary),
        "findings": _json_safe(checks),
        "wall_seconds": wall_seconds,
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2, allow_nan=False)
        file.write("\n")


def results_table(summary):
    """The markdown table: one line per row, mean ± std over seeds."""
    header = "| row | " + " | ".join(COLUMN_TITLES[m] for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for row in ROWS:
        cells = [_cell(summary[row].get(metric), metric) for metric in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings_markdown(checks):
    lines = []
    for check in checks:
        if check["mean_difference"] is None:
            lines.append(f"- **not measured**: {check['claim']} ({check['source']}).")
            continue
        verdict = "reproduced" if check["reproduced"] else "NOT reproduced"
        noise = " (within seed noise)" if check["within_seed_noise"] else ""
        # `+ 0.0` turns a rounding-level -0.0 into 0.0 for display.
        line = (
            f"- **{verdict}**{noise}: {check['claim']} ({check['source']}). "
            f"`{check['compared']}` = {round(check['mean_difference'], 4) + 0.0:+.4f} ± "
            f"{check['std_difference']:.4f} over {check['seeds']} seed(s)."
        )
        context = check.get("calibration_context")
        if context:
            state = "over-confident" if context["temperature"] > 1.0 else "not over-confident"
            floor = ("at the sampling-noise floor: too little miscalibration to measure a "
                     "reduction" if context["ece"] <= _AT_FLOOR * context["ece_noise_floor"]
                     else "above the sampling-noise floor")
            line += (
                f" Baseline `{context['row']}`: fitted T {context['temperature']:.2f} ({state}); "
                f"ECE {context['ece']:.4f} against {context['ece_noise_floor']:.4f} for a "
                f"perfectly calibrated model on this test set, {floor}."
            )
        lines.append(line)
    return "\n".join(lines)


def write_markdown(path, *, config, dataset, summary, checks, pictures, command, wall_seconds,
                   quick=False):
    seeds = ", ".join(str(seed) for seed in config.seed_list)
    banner = (
        f"**Quick run** ({config.seeds} seed, {config.epochs} epochs): a smoke run and a "
        "first look. The models are under-trained; run without `--quick` for the findings.\n\n"
        if quick else ""
    )
    sizes = dataset.sizes()
    reproduced = sum(check["reproduced"] for check in checks)
    text = f"""# keras-kd reproduce

`{command}`

{banner}Data: {dataset.description}; train {sizes['train']}, validation {sizes['validation']}
(temperature scaling only), test {sizes['test']} (every number below). Seeds: {seeds}.
Mean ± standard deviation over seeds; wall time {wall_seconds / 60:.1f} min.

{results_table(summary)}

Columns: test accuracy; NLL (mean negative log-likelihood); ECE ({config.num_bins}
equal-width bins); ECE (TS) after temperature scaling fitted on the validation split;
T (TS) the fitted temperature (> 1: the model was over-confident); parameters; seconds
of the row's own training (its teacher's not included).

## Rows

{chr(10).join(f"- `{row}`: {ROW_DESCRIPTIONS[row]}" for row in ROWS)}

## Findings ({reproduced} of {len(checks)} reproduced on this run)

Each line compares two rows seed by seed (the difference's mean ± std); "within seed
noise" marks a mean difference no larger than its standard deviation.

{findings_markdown(checks)}

## Pictures

{chr(10).join(f"- [{name}]({name}): {caption}" for name, caption in pictures)}
"""
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    return text


def _calibration_context(claim, baselines):
    """For claims about ECE: is the baseline over-confident, and above the noise floor?

    The papers' calibration claims are about over-confident models (fitted T > 1) whose
    ECE is far above what sampling noise alone gives on the test set.
    """
    if "ece" not in claim.metric:
        return None
    values = {name: [getattr(record, name) for record in baselines]
              for name in ("temperature", "ece", "ece_noise_floor")}
    if any(value is None for column in values.values() for value in column):
        return None
    return {"row": claim.baseline, **{name: statistics.fmean(column)
                                      for name, column in values.items()}}


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

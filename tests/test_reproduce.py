"""`keras-kd reproduce --quick` end to end, and the report's arithmetic against NumPy."""

import json
import pathlib
import re

import numpy as np
import pytest

import keras_kd
from keras_kd.cli import _experiments
from keras_kd.cli import _plots
from keras_kd.cli import _report
from keras_kd.cli import _statistics
from keras_kd.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = [_plots.reliability_file(row) for row in _plots.RELIABILITY_ROWS]
PICTURES += [_plots.BAR_CHART, _plots.PROJECTION]
MODERN_ROWS = ("dkd", "dist", "kd_standardized")
STUDENT_ROWS = ("student", "kd", "label_smoothing", "tfkd_reg", "tfkd_self", "de_kd",
                "ls_teacher_kd", "fitnets") + MODERN_ROWS
MLP_ROWS = tuple(f"mlp_{row}" for row in STUDENT_ROWS)
TEACHER_ROWS = ("teacher", "re_kd")
VERDICT_LINE = r"^- \*\*(reproduced|not reproduced|too noisy to tell)\*\*"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("reproduce")
    status = main(["reproduce", "--quick", "--output", str(output)])
    return status, output


# --- the command --------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_writes_every_file(quick_run):
    status, output = quick_run
    assert status == 0
    for name in ["results.json", "results.md"] + PICTURES:
        path = output / name
        assert path.is_file(), name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE
            assert path.stat().st_size > 5000, name  # a drawn figure, not an empty canvas


@pytest.mark.slow
def test_quick_run_records_every_row_and_column_finite_and_in_range(quick_run):
    _, output = quick_run
    results = json.loads((output / "results.json").read_text())
    records = results["records"]
    assert [record["row"] for record in records] == list(_experiments.ROWS)
    assert {record["seed"] for record in records} == {0}
    for record in records:
        where = record["row"]
        assert 0.0 <= record["accuracy"] <= 1.0, where
        assert np.isfinite(record["nll"]) and record["nll"] >= 0.0, where
        assert 0.0 <= record["ece"] <= 1.0, where
        assert 0.0 <= record["ece_temperature_scaled"] <= 1.0, where
        assert np.isfinite(record["nll_temperature_scaled"]), where
        assert np.isfinite(record["temperature"]) and record["temperature"] > 0.0, where
        assert 0.0 < record["training_seconds"] < 600.0, where
        # Temperature scaling minimises the validation NLL; on the test split it may
        # lose a little, never much, on a model this size.
        assert record["nll_temperature_scaled"] <= record["nll"] + 0.2, where
    params = {record["row"]: record["parameters"] for record in records}
    config = results["config"]
    # MNIST-1D (length 40, 1 channel). Thin CNN: two Conv1D(f, 5), flatten 10 x f,
    # dense units, logits. MLP: 40 -> m -> m -> 10. Teacher: three Conv1D(F, 5) to 5 x F.
    f, units, m, F = (config["student_filters"], config["student_units"], config["mlp_units"],
                      config["teacher_filters"])
    student = (5 * f + f) + (5 * f * f + f) + (10 * f * units + units) + (units * 10 + 10)
    mlp = (40 * m + m) + (m * m + m) + (m * 10 + 10)
    teacher = ((5 * F + F) + 2 * (5 * F * F + F) + (5 * F * config["teacher_units"]
               + config["teacher_units"]) + (config["teacher_units"] * 10 + 10))
    assert all(params[row] == student for row in STUDENT_ROWS)
    assert all(params[row] == mlp for row in MLP_ROWS)
    assert params["re_kd"] == params["teacher"] == teacher
    assert teacher > 2 * student
    # Distilled rows carry their teacher's numbers; the de_kd teacher is the poor one.
    by_row = {record["row"]: record for record in records}
    for row in ("kd", "fitnets") + MODERN_ROWS + tuple(f"mlp_{row}" for row in MODERN_ROWS):
        assert by_row[row]["teacher_accuracy"] == by_row["teacher"]["accuracy"]
    for row in ("tfkd_self", "re_kd"):
        assert by_row[row]["teacher_accuracy"] == by_row["student"]["accuracy"]
    assert by_row["de_kd"]["teacher_accuracy"] < by_row["student"]["accuracy"]
    assert 0.0 <= by_row["ls_teacher_kd"]["teacher_ece"] <= 1.0
    assert results["config"]["seeds"] == 1
    assert {"keras_kd", "keras", "tensorflow", "numpy", "mnist1d", "matplotlib"} <= set(
        results["versions"]
    )
    assert results["dataset"]["sizes"] == {"train": 4000, "validation": 2000, "test": 8000}
    # --quick does not tune; the report says where each value came from.
    assert results["config"]["tune"] is False
    assert "not tuned in this run" in results["hyperparameters"]["kd_temperature"]["how"]
    assert set(results["measurability"]) == {"student", "mlp_student", "teacher"}


@pytest.mark.slow
def test_quick_run_summary_and_findings_match_the_records(quick_run):
    _, output = quick_run
    results = json.loads((output / "results.json").read_text())
    values = {(r["row"], name): r[name] for r in results["records"] for name in r}
    for row in _experiments.ROWS:
        for metric in _experiments.METRICS:
            assert results["summary"][row][metric]["mean"] == pytest.approx(values[row, metric])
            assert results["summary"][row][metric]["std"] == 0.0  # one seed
    assert len(results["findings"]) == len(_report.CLAIMS)
    for check in results["findings"]:
        model, baseline = (side.split(".") for side in check["compared"].split(" - "))
        if model[0] not in _experiments.ROWS or baseline[0] not in _experiments.ROWS:
            continue  # a helper model (ls_teacher), not in the records
        # Recomputed from the logits by the report's own ECE: the library's, to 1e-6.
        difference = values[tuple(model)] - values[tuple(baseline)]
        assert check["mean_difference"] == pytest.approx(difference, abs=1e-6)
        low, high = check["interval"]
        assert low <= check["mean_difference"] <= high
        # One seed: the interval is the test bootstrap's alone.
        assert check["seed_half_width"] is None
        assert high - low == pytest.approx(2 * check["bootstrap_half_width"])
        # One seed leaves the seeds' noise unmeasured: never a verdict.
        assert check["verdict"] == "too noisy to tell"


@pytest.mark.slow
def test_quick_run_markdown_has_the_table_findings_and_pictures(quick_run):
    _, output = quick_run
    markdown = (output / "results.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| row |"))
    assert [cell.strip() for cell in header.strip("|").split("|")][1:] == [
        _report.COLUMN_TITLES[metric] for metric in _experiments.METRICS
    ]
    for row in _experiments.ROWS:
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row} |"))
        assert len(re.findall(r"\d\.\d+ ± \d\.\d+", line)) == len(_experiments.METRICS) - 1
    assert "`keras-kd reproduce --quick --output" in markdown
    assert len(re.findall(VERDICT_LINE, markdown, re.M)) == len(_report.CLAIMS)
    assert "## How the hyperparameters were chosen" in markdown
    assert re.search(r"`student`: ECE \d\.\d{4} = \d+\.\d x the noise floor", markdown)
    for picture in PICTURES:
        assert f"]({picture})" in markdown


# --- the report's arithmetic ------------------------------------------------------


def _record(row, seed, accuracy, ece=0.1):
    return _experiments.Record(
        row=row, seed=seed, accuracy=accuracy, nll=0.3, ece=ece, ece_temperature_scaled=0.05,
        nll_temperature_scaled=0.25, temperature=1.5, parameters=100, training_seconds=1.0,
    )


def _records(kd_accuracies, student_accuracies):
    records = []
    for seed, (kd, student) in enumerate(zip(kd_accuracies, student_accuracies)):
        records += [_record(row, seed, 0.5) for row in _experiments.ROWS
                    if row not in ("kd", "student")]
        records += [_record("kd", seed, kd), _record("student", seed, student)]
    return records


def test_summary_is_the_mean_and_sample_std_over_seeds():
    records = _records([0.90, 0.94, 0.95], [0.91, 0.92, 0.90])
    summary = _report.summarize(records)
    assert summary["kd"]["accuracy"]["mean"] == pytest.approx(np.mean([0.90, 0.94, 0.95]))
    assert summary["kd"]["accuracy"]["std"] == pytest.approx(np.std([0.90, 0.94, 0.95], ddof=1))
    assert summary["kd"]["accuracy"]["n"] == 3
    table = _report.results_table(summary)
    kd_line = next(line for line in table.splitlines() if line.startswith("| kd |"))
    assert f"{np.mean([0.90, 0.94, 0.95]):.4f} ± {np.std([0.90, 0.94, 0.95], ddof=1):.4f}" in kd_line


def _logits_with(predicted, confidence, num_classes=10):
    """Logits whose argmax is `predicted` with softmax probability `confidence`."""
    rest = (1.0 - confidence) / (num_classes - 1)
    logits = np.full((len(predicted), num_classes), np.log(rest))
    logits[np.arange(len(predicted)), predicted] = np.log(confidence)
    return logits


def test_findings_decide_each_claim_from_seed_and_bootstrap_intervals():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=400)
    wrong = (labels + 1) % 10
    accuracies = {"kd": [0.90, 0.94, 0.95], "student": [0.80, 0.81, 0.79]}
    outputs = {}
    for seed in range(3):
        outputs[seed] = {"test": {}, "temperature": {}}
        for model, accuracy in accuracies.items():
            right = np.arange(400) < round(accuracy[seed] * 400)
            outputs[seed]["test"][model] = _logits_with(np.where(right, labels, wrong), 0.9)
            outputs[seed]["temperature"][model] = 1.0
    claim = _report.Claim("KD beats the scratch student", "test", "kd", "accuracy",
                          "student", "accuracy", "higher")
    (check,) = _report.findings(outputs, labels, num_bins=15, bootstrap_samples=200,
                                claims=(claim,))
    differences = np.subtract(accuracies["kd"], accuracies["student"])
    assert check["differences"] == pytest.approx(differences)
    assert check["mean_difference"] == pytest.approx(differences.mean())
    from scipy import stats

    t_width = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert check["seed_half_width"] == pytest.approx(t_width, rel=1e-3)
    # Resampling the test examples moves each accuracy by about sqrt(p(1-p)/N).
    assert 0.005 < check["bootstrap_half_width"] < 0.1
    assert check["half_width"] == pytest.approx(np.hypot(t_width, check["bootstrap_half_width"]),
                                                rel=1e-3)
    assert check["verdict"] == "reproduced" and check["reproduced"] is True

    against = _report.Claim("KD is worse", "test", "kd", "accuracy", "student", "accuracy",
                            "lower")
    (opposite,) = _report.findings(outputs, labels, 15, 200, claims=(against,))
    assert opposite["verdict"] == "not reproduced"
    assert "**not reproduced**: KD is worse" in _report.findings_markdown([opposite])
    (one_seed,) = _report.findings({0: outputs[0]}, labels, 15, 200, claims=(claim,))
    assert one_seed["seed_half_width"] is None and one_seed["verdict"] == "too noisy to tell"


@pytest.mark.parametrize(
    "mean, half_width, direction, expected",
    [
        (0.02, 0.01, "higher", "reproduced"),
        (-0.02, 0.01, "lower", "reproduced"),
        (-0.02, 0.01, "higher", "not reproduced"),  # the other side
        (0.001, 0.002, "higher", "not reproduced"),  # within ±0.005: no effect
        (0.01, 0.02, "higher", "too noisy to tell"),
        (0.0, 0.02, "lower", "too noisy to tell"),
    ],
)
def test_verdicts(mean, half_width, direction, expected):
    assert _statistics.verdict(mean, half_width, direction, negligible=0.005) == expected


def test_t_quantile_against_scipy():
    from scipy import stats

    for degrees in range(1, 60):
        assert _statistics.t_quantile(degrees) == pytest.approx(stats.t.ppf(0.975, degrees),
                                                                rel=2e-3)


def test_vectorised_ece_equals_the_library_with_and_without_weights():
    from keras_kd import calibration

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 10)) * 3.0
    labels = rng.integers(0, 10, size=500)
    counts = _statistics.bootstrap_counts(500, 4, seed=0)
    assert np.all(counts.sum(axis=1) == 500)
    ours = _statistics.measure(logits, labels, "ece", 15, counts=counts)
    for resample, value in zip(counts, ours):
        expected = calibration.expected_calibration_error(
            logits, labels, num_bins=15, from_logits=True, sample_weight=resample)
        assert value == pytest.approx(expected, abs=1e-6)
    assert _statistics.measure(logits, labels, "ece", 15)[0] == pytest.approx(
        calibration.expected_calibration_error(logits, labels, num_bins=15, from_logits=True),
        abs=1e-6)
    accuracy = _statistics.measure(logits, labels, "accuracy", 15, counts=counts)
    correct = np.argmax(logits, axis=1) == labels
    np.testing.assert_allclose(accuracy, counts @ correct / 500)
    assert _statistics.measure(logits, labels, "ece_temperature_scaled", 15) is None
    scaled = _statistics.measure(logits, labels, "ece_temperature_scaled", 15, temperature=2.0)
    assert scaled[0] == pytest.approx(calibration.expected_calibration_error(
        logits / 2.0, labels, num_bins=15, from_logits=True), abs=1e-6)


def test_the_row_table_is_consistent():
    names = [row.name for row in _experiments.ROW_TABLE + _experiments.HELPERS]
    assert len(names) == len(set(names))
    for row in _experiments.ROW_TABLE + _experiments.HELPERS:
        assert row.architecture in _experiments.ARCHITECTURES, row
        # Each row learns from labels or from a teacher, never both or neither.
        assert (row.loss is None) != (row.teacher is None), row
        assert (row.teacher is None) == (row.distillation is None), row
        if row.teacher:
            assert row.teacher in names, row
    assert set(STUDENT_ROWS + MLP_ROWS + TEACHER_ROWS) == set(_experiments.ROWS)
    assert _experiments.models_per_seed() == len(_experiments.ROWS) + 2
    for claim in _report.CLAIMS:
        assert claim.model in names and claim.baseline in names, claim
        assert claim.metric in _report.NEGLIGIBLE and claim.direction in ("higher", "lower")


def test_tuning_counts_only_the_grids_it_trains():
    from keras_kd.cli import _config

    config = _config.ReproduceConfig()
    assert _experiments.tuning_models(config) == 2 * 3 * 2 + 3
    assert _experiments.tuning_models(config, fixed={"kd_alpha"}) == 3 * 2 + 3
    assert _experiments.tuning_models(config, fixed={"mlp_kd_temperature", "smoothing"}) == 6
    assert _experiments.tuning_models(config.with_overrides({"tune": "false"})) == 0
    notes = _experiments.provenance_of_defaults(config, {"smoothing"}, {
        "kd_temperature": "tuned in this run: x"})
    assert notes["smoothing"]["how"] == "set explicitly (--set)"
    assert notes["kd_temperature"]["how"] == "tuned in this run: x"
    assert "not tuned in this run" in notes["kd_alpha"]["how"]
    assert notes["teacher_free_temperature"]["how"] == "the paper's value, not tuned"
    assert notes["dkd_nckd_weight"] == {"value": 8.0,
                                        "how": "the authors' CIFAR-100 default, not tuned"}


def test_modern_rows_use_the_authors_defaults_in_the_distillers_convention():
    from keras_kd.cli import _config

    config = _config.ReproduceConfig()
    rows = {row.name: row for row in _experiments.ROW_TABLE}
    # DKD: CE 1 + DKD 1 (alpha 1, beta 8, T 4) is alpha = 1 / (1 + 1) in the Distiller.
    dkd = rows["dkd"].distillation(config, "student")
    term = dkd["distillation_loss"]
    assert isinstance(term, keras_kd.DecoupledDistillationLoss)
    assert (term.temperature, term.alpha, term.beta, dkd["alpha"]) == (4.0, 1.0, 8.0, 0.5)
    # Its warm-up: 20 of 240 epochs, counted in this run's optimizer steps.
    schedule = rows["dkd"].schedule(config, total_steps=1875)
    assert schedule.unit == "step"
    warmup = schedule.term_weight_schedules["decoupled_distillation_loss"]
    assert (warmup.value, warmup.warmup) == (1.0, round(1875 * 20 / 240))
    # DIST: CE + 2 L (tau 4, beta = gamma = 1) is alpha = 2 / 3.
    dist = rows["mlp_dist"].distillation(config, "mlp")
    assert isinstance(dist["distillation_loss"], keras_kd.DISTLoss)
    assert (dist["distillation_loss"].temperature, dist["distillation_loss"].beta,
            dist["distillation_loss"].gamma) == (4.0, 1.0, 1.0)
    assert dist["alpha"] == pytest.approx(2.0 / 3.0)
    # Logit standardization: 0.1 CE + 9 KD at base T 2 is alpha = 9 / 9.1.
    standardized = rows["kd_standardized"].distillation(config, "student")
    assert standardized["distillation_loss"].standardize is True
    assert standardized["distillation_loss"].temperature == 2.0
    assert standardized["alpha"] == pytest.approx(9.0 / 9.1)
    claimed = {(claim.model, claim.baseline) for claim in _report.CLAIMS}
    for prefix in ("", "mlp_"):
        for row in MODERN_ROWS:
            assert (prefix + row, prefix + "kd") in claimed


def test_progress_counts_models_and_estimates_the_time_left():
    lines = []
    progress = _experiments.Progress(4, lines.append)
    progress.step("a")
    progress.step("b")
    assert re.fullmatch(r"a  \[1 of 4 models done, ~\d+\.\d min left\]", lines[0])
    assert "[2 of 4 models done" in lines[1]


def test_template_plane_projection_against_numpy():
    rng = np.random.default_rng(0)
    dimension, classes = 6, (2, 0, 3)
    kernel = rng.normal(size=(dimension, 5))
    bias = np.ones(5)  # [w_k, 1] is then the augmented image of the activation w_k
    templates = kernel[:, classes].T
    # Activations in the plane through the templates, plus ones pushed off it.
    weights = rng.uniform(-1, 2, size=(20, 2))
    in_plane = templates[0] + weights @ (templates[1:] - templates[0])
    normal = np.linalg.svd(np.vstack([templates[1:] - templates[0]]))[2][-1]
    off_plane = in_plane + 3.0 * normal
    points, template_points = _plots.template_plane_projection(
        np.vstack([in_plane, off_plane]), kernel, bias, classes
    )
    # Distances within the plane are kept, including to the templates...
    reference = np.vstack([in_plane, templates])
    projected = np.vstack([points[:20], template_points])
    distances = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    np.testing.assert_allclose(
        np.linalg.norm(projected[:, None] - projected[None], axis=-1), distances, atol=1e-9
    )
    # ...the first template is the origin, and the normal component is dropped.
    np.testing.assert_allclose(template_points[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(points[20:], points[:20], atol=1e-9)


def test_the_library_never_imports_the_command_line():
    package = pathlib.Path(_experiments.__file__).parents[1]
    # `python -m keras_kd` (__main__.py) is the command line's own entry point.
    for path in set(package.glob("*.py")) - {package / "__main__.py"}:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"keras_kd\.cli|from keras_kd import cli|from \. import cli", source), path


def test_noise_floor_is_the_expected_ece_of_a_perfectly_calibrated_model():
    from math import comb

    num_examples, confidence = 450, 0.7
    # Logits whose softmax puts 0.7 on class 0 and 0.3 / 9 on each other class.
    logits = np.tile(np.log([confidence] + [0.3 / 9] * 9), (num_examples, 1))
    # One bin holds everything: ECE = |k / N - c| with k ~ Binomial(N, c) correct.
    expected = sum(
        comb(num_examples, k) * confidence**k * (1 - confidence) ** (num_examples - k)
        * abs(k / num_examples - confidence)
        for k in range(num_examples + 1)
    )
    floor = _statistics.noise_floor(logits, num_bins=15, seed=0, draws=2000)
    assert floor == pytest.approx(expected, abs=0.001)
    # Certain predictions are always right when calibrated: no noise at all.
    certain = np.tile([60.0] + [0.0] * 9, (num_examples, 1))
    assert _statistics.noise_floor(certain, num_bins=15, seed=0, draws=5) == 0.0

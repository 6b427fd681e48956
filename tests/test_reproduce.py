"""`keras-kd reproduce --quick` end to end, and the report's arithmetic against NumPy."""

import json
import pathlib
import re

import numpy as np
import pytest

from keras_kd.cli import _experiments
from keras_kd.cli import _plots
from keras_kd.cli import _report
from keras_kd.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = [_plots.reliability_file(row) for row in ("student", "kd", "label_smoothing", "teacher")]
PICTURES += [_plots.BAR_CHART, _plots.PROJECTION]
STUDENT_ROWS = ("student", "kd", "label_smoothing", "tfkd_reg", "tfkd_self", "de_kd",
                "ls_teacher_kd", "fitnets")
TEACHER_ROWS = ("teacher", "re_kd")


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
    # The MLP student: 64 inputs -> units (kernel + bias) -> 10 logits (kernel + bias).
    units = results["config"]["student_units"]
    assert all(params[row] == 64 * units + units + units * 10 + 10 for row in STUDENT_ROWS)
    assert params["re_kd"] == params["teacher"] > 5 * params["student"]
    # Distilled rows carry their teacher's numbers; the de_kd teacher is the poor one.
    by_row = {record["row"]: record for record in records}
    for row in ("kd", "fitnets"):
        assert by_row[row]["teacher_accuracy"] == by_row["teacher"]["accuracy"]
    for row in ("tfkd_self", "re_kd"):
        assert by_row[row]["teacher_accuracy"] == by_row["student"]["accuracy"]
    assert by_row["de_kd"]["teacher_accuracy"] < by_row["student"]["accuracy"]
    assert 0.0 <= by_row["ls_teacher_kd"]["teacher_ece"] <= 1.0
    assert results["config"]["seeds"] == 1
    assert {"keras_kd", "keras", "tensorflow", "numpy", "sklearn", "matplotlib"} <= set(
        results["versions"]
    )
    assert results["dataset"]["sizes"] == {"train": 1077, "validation": 270, "test": 450}


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
        row_metric, baseline_metric = check["compared"].split(" - ")
        difference = values[tuple(row_metric.split("."))] - values[tuple(baseline_metric.split("."))]
        assert check["mean_difference"] == pytest.approx(difference)
        claims_lower = " lowers " in check["claim"] or "better calibrated" in check["claim"] \
            or "distils worse" in check["claim"]
        assert check["reproduced"] == (difference < 0 if claims_lower else difference > 0)


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
    assert len(re.findall(r"^- \*\*(reproduced|NOT reproduced)\*\*", markdown, re.M)) == len(
        _report.CLAIMS
    )
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


def test_findings_compare_rows_seed_by_seed():
    kd, student = [0.90, 0.94, 0.95], [0.91, 0.92, 0.90]
    check = _report.findings(_records(kd, student))[1]
    assert check["compared"] == "kd.accuracy - student.accuracy"
    differences = np.subtract(kd, student)
    assert check["mean_difference"] == pytest.approx(differences.mean())
    assert check["std_difference"] == pytest.approx(differences.std(ddof=1))
    assert check["reproduced"] is True
    # Mean +0.02 against a spread of 0.03: within the noise of three seeds.
    assert check["within_seed_noise"] is bool(abs(differences.mean()) <= differences.std(ddof=1))

    worse = _report.findings(_records([0.80, 0.81], [0.90, 0.91]))[1]
    assert worse["reproduced"] is False and worse["within_seed_noise"] is False
    assert "**NOT reproduced**: KD beats the scratch student" in _report.findings_markdown([worse])


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
    floor = _experiments._calibrated_ece(logits, num_bins=15, seed=0, draws=400)
    assert floor == pytest.approx(expected, abs=0.002)
    # Certain predictions are always right when calibrated: no noise at all.
    certain = np.tile([60.0] + [0.0] * 9, (num_examples, 1))
    assert _experiments._calibrated_ece(certain, num_bins=15, seed=0, draws=5) == 0.0

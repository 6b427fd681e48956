"""What running the teacher inside the student's step costs, with its weights as state.

    KERAS_BACKEND=jax python benchmarks/live_teacher_state.py                 # CNN, 15 rounds
    KERAS_BACKEND=jax python benchmarks/live_teacher_state.py --workload mlp --rounds 9

`keras-kd bench` reports live distillation against the floor `student_fit +
teacher_forward`: two separately compiled programs. Every distiller instead runs the
teacher inside the student's training step. This script times, interleaved in one
process (medians of `--rounds` timed rounds, after 2 warm-up rounds), on the bench's
own models and data:

- `student_fit` and `teacher_forward`: the floor's two parts;
- `keras_kd`: `keras_kd.Distiller.fit`;
- `keras_distillation`: `keras.distillation.Distiller.fit`, correctly configured;
- `live_kd_state`: the bench's `student_fit_live_kd`, a plain model tracking the
  student and the frozen teacher (its weights passed to the compiled step as state,
  as any distiller's are);
- `live_kd_constants`: the same objective with the teacher *untracked*, so that under
  JAX its weights are read as constants and baked into the compiled step.

`live_kd_constants` shows what the state costs; it is not a way to distil: a teacher
baked in as constants keeps its old weights after `load_weights` or any assignment
(a silently stale teacher), and a large teacher is copied into the compiled program.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402

from keras_kd.cli import bench  # noqa: E402
from keras_kd.cli import build_parser  # noqa: E402
from keras_kd.cli._bench_common import synthetic_arrays  # noqa: E402

WARMUP_ROUNDS = 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("mlp", "cnn"), default="cnn")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds, default 15")
    options = parser.parse_args()
    if options.rounds < 1:
        parser.error(f"--rounds must be at least 1; got {options.rounds}.")

    args = build_parser().parse_args(["bench", "--workload", options.workload])
    bench._resolve(args)
    x, y = synthetic_arrays(args.samples, bench._input_shape(args), args.classes)
    data = bench._pipeline(x, y, args.batch_size)
    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    compile_args = {"optimizer": "adam", "loss": hard_loss, "jit_compile": True}

    teacher = bench._teacher(args)
    student = bench._student(args)
    student.compile(**compile_args)
    distiller = bench._keras_kd_distiller(args, teacher, compile_args)
    reference = bench._keras_distillation(args, teacher, compile_args)
    forward = bench._compiled_forward(teacher, jit_compile=True)

    passes = {
        "student_fit": lambda: bench._one_epoch(student, data),
        "teacher_forward": lambda: bench._timed(forward, data),
        "keras_kd": lambda: bench._one_epoch(distiller, data),
        "keras_distillation": lambda: bench._one_epoch(reference, data),
        "live_kd_state": lambda model=bench._student_with_live_kd(
            args, compile_args, teacher
        ): bench._one_epoch(model, data),
        "live_kd_constants": lambda model=_untracked_teacher_kd(
            args, compile_args, teacher
        ): bench._one_epoch(model, data),
    }
    args.warmup, args.epochs = WARMUP_ROUNDS, options.rounds
    wall, cpu = bench._interleaved(passes, args, f"{keras.backend.backend()} {args.workload}")

    print(f"\n{args.workload}, {keras.backend.backend()}, {options.rounds} rounds; "
          "ratio to the floor (student_fit + teacher_forward), wall (CPU):")
    wall_floor = wall["student_fit"] + wall["teacher_forward"]
    cpu_floor = cpu["student_fit"] + cpu["teacher_forward"]
    for name in ("keras_kd", "keras_distillation", "live_kd_state", "live_kd_constants"):
        print(f"  {name:20s} {wall[name] / wall_floor:.3f} ({cpu[name] / cpu_floor:.3f})")
    print(f"  keras_kd / live_kd_state {wall['keras_kd'] / wall['live_kd_state']:.3f} "
          f"({cpu['keras_kd'] / cpu['live_kd_state']:.3f})")
    print("CPU seconds per epoch: "
          + ", ".join(f"{name} {seconds:.3f}" for name, seconds in cpu.items()))


def _untracked_teacher_kd(args, compile_args, teacher):
    """The student's own model, the teacher called from a closure (not tracked)."""
    objective = bench._kd_objective(args, compile_args)

    class StudentWithUntrackedTeacher(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            teacher_logits = keras.ops.stop_gradient(teacher(x, training=False))
            return objective(y, teacher_logits, y_pred)

    student = bench._student(args)
    model = StudentWithUntrackedTeacher(student.inputs, student.outputs)
    model.compile(**compile_args)
    return model


if __name__ == "__main__":
    main()

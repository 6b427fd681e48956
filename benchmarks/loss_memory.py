"""Memory of the distillation loss at large vocabularies, from XLA's own accounting.

    KERAS_BACKEND=jax python benchmarks/loss_memory.py            # K = 32k and 128k
    KERAS_BACKEND=jax python benchmarks/loss_memory.py --tokens 2048 --vocabulary 262144

For (tokens x K) teacher and student logits, compiles with `jax.jit` the per-token
loss (`keras_kd.losses.distillation_loss`, then the mean) and its value-and-gradient
with respect to the student's logits, and reads the compiled program's
`memory_analysis()`: the temporary buffers XLA allocates beyond the arguments and the
outputs. Reported in units of one (tokens x K) float32 buffer, the "extra buffers".
Nothing is allocated or run: the figures are the compiler's plan, exact for its
schedule, and independent of the machine's load.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from keras_kd import losses  # noqa: E402


def compiled_memory(function, *shapes):
    arguments = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    analysis = jax.jit(function).lower(*arguments).compile().memory_analysis()
    return analysis.temp_size_in_bytes, analysis.output_size_in_bytes


def measure(tokens, vocabulary, divergence, temperature=2.0):
    def loss(teacher_logits, student_logits):
        return jnp.mean(
            losses.distillation_loss(
                teacher_logits, student_logits, temperature, divergence=divergence
            )
        )

    shape = (tokens, vocabulary)
    buffer = tokens * vocabulary * 4
    value_temp, _ = compiled_memory(loss, shape, shape)
    gradient_temp, gradient_out = compiled_memory(
        jax.value_and_grad(loss, argnums=1), shape, shape
    )
    return {
        "tokens": tokens,
        "vocabulary": vocabulary,
        "divergence": divergence,
        "buffer_mib": buffer / 2**20,
        "value_extra_buffers": value_temp / buffer,
        "gradient_extra_buffers": gradient_temp / buffer,
        "gradient_output_buffers": gradient_out / buffer,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocabulary", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    args = parser.parse_args(argv)
    tokens, vocabularies = (64, [1024]) if args.quick else (args.tokens, args.vocabulary)
    rows = []
    print(f"backend {jax.default_backend()}, jax {jax.__version__}")
    print("tokens  K        divergence  (tokens x K) MiB  extra buffers: value  value+grad")
    for vocabulary in vocabularies:
        for divergence in losses.DIVERGENCES:
            row = measure(tokens, vocabulary, divergence)
            rows.append(row)
            print(
                f"{tokens:<7} {vocabulary:<8} {divergence:<11} {row['buffer_mib']:>16.0f}"
                f"  {row['value_extra_buffers']:>19.2f}  {row['gradient_extra_buffers']:>10.2f}"
            )
    return rows


if __name__ == "__main__":
    main()

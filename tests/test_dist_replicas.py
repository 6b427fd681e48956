"""DISTLoss under `tf.distribute.MirroredStrategy` on 2 replicas: what it computes.

DIST's intra-class term correlates over the batch a replica sees. On R replicas keras_kd
computes each replica's DIST over its local batch, divided by R so that the summed
replica losses (and gradients) are the mean of the R local-batch losses, which is what
the authors' DistributedDataParallel training optimises. The logical devices must be
set before TensorFlow initialises, so this runs in a subprocess.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from test_modern_losses import np_dist_authors
from test_modern_losses import random_logits

pytestmark = pytest.mark.slow  # a TensorFlow subprocess, 10-40 s

_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras_kd
teacher, student = (np.asarray(a, "float32") for a in json.loads(sys.argv[1]))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loss = keras_kd.DISTLoss(temperature=4.0)
dataset = tf.data.Dataset.from_tensor_slices((teacher, student)).batch(len(teacher))
batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

def replica_loss(t, s):
    return loss(t, s), tf.shape(s)[0]

values, sizes = strategy.run(replica_loss, args=batch)
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "values": [float(v) for v in strategy.experimental_local_results(values)],
    "sizes": [int(n) for n in strategy.experimental_local_results(sizes)],
}))
"""


def test_dist_on_two_replicas_is_the_mean_of_local_batch_losses():
    teacher, student = random_logits(10, (16, 5)), random_logits(11, (16, 5))
    process = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps([teacher.tolist(), student.tolist()])],
        capture_output=True, text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "3", **__import__("os").environ},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["replicas"] == 2 and result["sizes"] == [8, 8]
    local = [np_dist_authors(teacher[rows], student[rows], 4.0, 1.0, 1.0) for rows in (slice(0, 8), slice(8, 16))]
    # Each replica's value is its local-batch DIST / 2: their sum is the mean of the two.
    np.testing.assert_allclose(result["values"], np.array(local) / 2, rtol=1e-5)
    # ...which is not the DIST of the global batch (the intra-class term differs).
    global_value = np_dist_authors(teacher, student, 4.0, 1.0, 1.0)
    assert abs(sum(result["values"]) - global_value) > 1e-3

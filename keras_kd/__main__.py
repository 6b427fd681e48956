"""`python -m keras_kd ...` is the same as the `keras-kd` console script."""

import sys

from keras_kd.cli import main

sys.exit(main())

"""`python -m inception_keras.cli`: the same as the `inception-keras` script."""

import sys

from inception_keras.cli import main

sys.exit(main())

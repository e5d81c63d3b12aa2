"""Export an untrained googlenet_mini; used by the SIGKILL test."""

import sys

from inception_keras import build_model, get_spec
from inception_keras.export import export_saved_model

spec = get_spec("googlenet_mini")
result = export_saved_model(build_model(spec), spec, [str(i) for i in range(10)], base_dir=sys.argv[1])
print(result.describe(), flush=True)

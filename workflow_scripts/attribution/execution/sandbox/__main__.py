"""Worker entry point: ``python -m attribution.execution.sandbox IN_FD OUT_FD``."""

import sys

# Imported from the package, not run as __main__, so pickled classes keep their module names.
from attribution.execution.sandbox.worker import worker_main

sys.exit(worker_main(sys.argv[1:]))

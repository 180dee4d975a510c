"""``python -m airflow_sm_pytorch.local.serving``: the local model server (see :mod:`.server`)."""

import sys

from airflow_sm_pytorch.local.serving.server import main

sys.exit(main())

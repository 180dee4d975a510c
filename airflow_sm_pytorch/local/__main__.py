"""``python -m airflow_sm_pytorch.local`` is ``airflow-sm-pytorch local serve``."""

import sys

from airflow_sm_pytorch.cli import main

sys.exit(main(["local", "serve", *sys.argv[1:]]))

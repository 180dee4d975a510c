import sys

from airflow_sm_pytorch.cli import main

sys.exit(main())

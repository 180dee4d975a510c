"""Pure request builders: specs in, botocore-shaped dicts out. No boto3, no Airflow, no network."""

"""Sensors: waiting for SageMaker resources this DAG did not start."""

"""Triggers: the deferred half of the operators and the sensor, run by Airflow's triggerer."""

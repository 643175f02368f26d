# The build stage has a C compiler: it builds the wheel with the attribution core compiled by
# mypyc (setup.py, ATTRIBUTION_COMPILE=1), type-checked against the installed dependencies, and
# the wheels of those dependencies, so that the image runs what was checked. Both stages are on
# the same Debian release: the compiled modules link against its C library.
FROM python:3.11-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY schemas schemas
COPY attribution attribution
COPY streams streams
COPY agents agents
COPY sinks sinks
COPY simulation simulation
COPY deploy/build-wheel deploy/build-wheel
RUN pip install --no-cache-dir mypy==2.4.1 setuptools==80.9.0 . \
    && deploy/build-wheel /wheels --no-cache-dir

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels influencer-attribution \
    && rm -rf /wheels \
    && python -c "import attribution.journey as core; assert core.__file__.endswith('.so'), core.__file__" \
    && useradd --create-home attribution
USER attribution
ENV ATTRIBUTION_DATA_DIR=/home/attribution/data
EXPOSE 6066
CMD ["attribution", "worker"]

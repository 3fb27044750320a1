# gpuwatch's images. Two targets:
#   daemon    (the default) gpuwatch without torch: the CronJobs and `gpuwatch run`
#             docker build --target daemon -t gpuwatch:0.1.0 .
#   training  gpuwatch with the train extra, for deploy/workload; CPU torch unless
#             TORCH_INDEX_URL names a CUDA wheel index
#             docker build --target training -t gpuwatch-train:0.1.0 \
#               --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# Both run as the non-root user 10001 (the manifests' runAsUser) and need no writable
# root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The wheel, with the shipped rules and report templates inside it.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gpuwatch ./gpuwatch
COPY rules ./rules
COPY reports ./reports
RUN pip wheel --no-deps --wheel-dir /wheels .

# What both targets share: Python, the user, no bytecode writes.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 gpuwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin gpuwatch
# The versions the test suite passed with (`make lock` keeps the file).
COPY requirements/constraints.txt /etc/gpuwatch/constraints.txt

FROM runtime AS training
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# torch first, from its own index: the train extra's range is then met and pip fetches
# nothing bigger from PyPI.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=build /wheels /wheels
# The pinned versions of everything but torch, which TORCH_VERSION chose above.
RUN grep -v '^torch==' /etc/gpuwatch/constraints.txt > /tmp/constraints.txt \
 && for wheel in /wheels/gpuwatch-*.whl; do \
      pip install --constraint /tmp/constraints.txt "${wheel}[train]"; done \
 && rm -rf /wheels /tmp/constraints.txt
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["gpuwatch"]
CMD ["--help"]

# Last, so that a plain `docker build .` builds it.
FROM runtime AS daemon
COPY --from=build /wheels /wheels
RUN pip install --constraint /etc/gpuwatch/constraints.txt /wheels/gpuwatch-*.whl \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /tmp
EXPOSE 9400
ENTRYPOINT ["gpuwatch"]
CMD ["--help"]

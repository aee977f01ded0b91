# A stand-in for the official redis image where no registry can be reached (CI here): Debian 12's
# redis-server on the local base (packaging/local-base). Built by the tests with an empty context:
#   docker build -t async-engine-ci-redis:bookworm --build-arg BASE_IMAGE=async-engine-base:bookworm - < THIS
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && install -d -o redis -g redis /data
USER redis
WORKDIR /data
CMD ["redis-server", "--save", "", "--appendonly", "yes"]

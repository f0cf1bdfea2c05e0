# syntax=docker/dockerfile:1
#
# docker build -t integration-service .
#
# It listens on every interface, so it needs tokens (and should have TLS);
# without them it refuses to start. Mount them as files, for example:
#
# docker run -p 50051:50051 -v integration-data:/data \
#   -v "$PWD/secrets:/run/secrets:ro" \
#   -e INTEGRATION_ADMIN_TOKEN_FILE=/run/secrets/admin-tokens \
#   -e INTEGRATION_VALIDATOR_TOKEN_FILE=/run/secrets/validator-tokens \
#   -e INTEGRATION_TLS_CERT=/run/secrets/tls.crt \
#   -e INTEGRATION_TLS_KEY=/run/secrets/tls.key \
#   integration-service
#
# where each tokens file holds one token per line (`openssl rand -hex 32`).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and build artefacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin integration-service \
    && cp target/release/integration-service /integration-service \
    && mkdir /data

# glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /integration-service /usr/local/bin/integration-service
# 65532 is the base image's `nonroot` user, by number so that Kubernetes'
# runAsNonRoot can check it.
COPY --from=build --chown=65532:65532 /data /data
ENV INTEGRATION_LISTEN=0.0.0.0:50051 \
    DATABASE_URL=sqlite:///data/integration-service.db?mode=rwc \
    INTEGRATION_LOG_FORMAT=json
VOLUME /data
EXPOSE 50051
USER 65532:65532
# Asks the server's own health service on INTEGRATION_LISTEN; Docker runs
# it, Kubernetes uses its own probes instead. It speaks plain gRPC, so a
# container serving TLS (INTEGRATION_TLS_CERT) reports unhealthy: run such
# a container with --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/integration-service", "health-check"]
ENTRYPOINT ["/usr/local/bin/integration-service"]
CMD ["serve"]

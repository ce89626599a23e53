# syntax=docker/dockerfile:1
# The operator's image: a release build in the Rust image, then only the binary on a distroless
# base that runs as a non-root user. Build from the repository root:
#   docker build -t canary-operator:0.1.0 .
#
# The binary links glibc dynamically (no musl target is available to our builds), so the runtime
# is distroless `cc` (glibc, libgcc; no shell, no package manager) rather than `static`. The builder
# is Debian bookworm like the runtime, so the binary never needs a newer glibc than it finds.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# hack/build-release.sh is the same build `make release` runs in CI, so a broken step shows there
# without a Docker engine. The cache mounts keep the registry and target dir across image builds;
# a cache-mounted target is gone after this RUN, hence the copy out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cp "$(hack/build-release.sh)" /canary-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="canary-operator" \
      org.opencontainers.image.description="Kubernetes operator for Istio canary releases of model-backed services" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /canary-operator /canary-operator
# 65532 is distroless's `nonroot`; numeric, so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# /healthz, /readyz and /metrics (HTTP_ADDRESS, 0.0.0.0:8080 in the Helm chart).
EXPOSE 8080
ENTRYPOINT ["/canary-operator"]

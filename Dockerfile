# syntax=docker/dockerfile:1
#
# The azureml-operator image: a release build on Debian 12 (bookworm), run on distroless
# cc-debian12 as the `nonroot` user (65532).
#
# The binary links glibc dynamically (libc, libm, libgcc_s; TLS is rustls with ring, so no
# OpenSSL; the allocator is jemalloc, built from source by its crate with the image's cc and make). cc-debian12 carries exactly those libraries, and building on bookworm keeps the glibc
# the binary was linked against equal to the runtime's (2.36).
#
#   docker build -t azureml-operator .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the build directory between builds; the binary is
# copied out of the cached target directory because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p azureml-operator --bin azureml-operator \
    && cp target/release/azureml-operator /azureml-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="azureml-operator" \
      org.opencontainers.image.description="Kubernetes operator for the Azure ML fine-tune, register, deploy and invoke workflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/azureml-operator/azureml-operator"
COPY --from=builder /azureml-operator /azureml-operator
# The distroless `nonroot` user, by number: the kubelet can only verify runAsNonRoot against a
# numeric USER.
USER 65532:65532
# /metrics, /healthz and /readyz.
EXPOSE 8080
ENTRYPOINT ["/azureml-operator", "run"]

# syntax=docker/dockerfile:1
#
# chatd's images. Targets:
#   chatd     (the default, last stage)  the replica: `chatd serve`, `migrate`, `token`
#   mockllm   the mock LLM server, for the dev overlay and load tests
#   loadtest  chatd-loadtest `run` against a deployment
#
#   docker build -t chatd:0.1.0 .
#   docker build -t chatd-mockllm:0.1.0 --target mockllm .
#   docker build -t chatd-loadtest:0.1.0 --target loadtest .
#
# Build: the official Rust image on Debian 12 (bookworm), the release the
# runtime image is built from, so the binary's glibc matches. Run:
# distroless cc (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager) as its non-root user 65532. Pin both by digest in your own
# registry for reproducible builds. deploy/README.md explains the choice.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the chatd image's binary comes from: the build-chatd stage, or
# `prebuilt`: out/chatd of the build context, built outside Docker for the
# runtime image's glibc (the image test does this).
ARG CHATD_BINARY=build-chatd

FROM ${RUST_IMAGE} AS source
WORKDIR /src
COPY . .

# Each binary builds in its own stage, so a target builds only what it ships.
# The cache mounts keep crates.io downloads and compiled dependencies
# between builds.
FROM source AS build-chatd
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=chatd-target \
    cargo build --release --locked -p chatd-replica --bin chatd \
    && install -D target/release/chatd /out/chatd

FROM source AS build-mockllm
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=chatd-target \
    cargo build --release --locked -p chatd-mockllm --bin chatd-mockllm \
    && install -D target/release/chatd-mockllm /out/chatd-mockllm

FROM source AS build-loadtest
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=chatd-target \
    cargo build --release --locked -p chatd-loadtest --bin chatd-loadtest \
    && install -D target/release/chatd-loadtest /out/chatd-loadtest

FROM ${RUNTIME_IMAGE} AS mockllm
COPY --from=build-mockllm /out/chatd-mockllm /usr/local/bin/chatd-mockllm
USER 65532:65532
ENV CHATD_MOCKLLM_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chatd-mockllm"]

FROM ${RUNTIME_IMAGE} AS loadtest
COPY --from=build-loadtest /out/chatd-loadtest /usr/local/bin/chatd-loadtest
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/chatd-loadtest"]

FROM scratch AS prebuilt
COPY out/chatd /out/chatd

FROM ${CHATD_BINARY} AS chatd-binary

FROM ${RUNTIME_IMAGE} AS chatd
COPY --from=chatd-binary /out/chatd /usr/local/bin/chatd
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# JSON log lines (on stderr, which the container runtime collects with
# stdout) and every interface of the container; the relay then requires
# CHATD_RELAY_SECRET.
ENV CHATD_LOG_FORMAT=json \
    CHATD_HTTP_ADDR=0.0.0.0:7080 \
    CHATD_RELAY_ADDR=0.0.0.0:7081
EXPOSE 7080 7081
ENTRYPOINT ["/usr/local/bin/chatd"]
CMD ["serve"]

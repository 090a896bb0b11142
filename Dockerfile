# syntax=docker/dockerfile:1.7
# Weft's images from one build of the workspace (static musl binaries):
#
#   docker build --target examples   -t weft/weft-examples:0.1.0 .
#   docker build --target proxy-init -t weft/weft-proxy-init:0.1.0 .
#   docker build --target proxy      -t weft/weft-proxy:0.1.0 .
#   docker build --target control    -t weft/weft-control:0.1.0 .   (the default)
#
# control holds weft-control and weftctl (the injector webhook runs `weftctl
# webhook` from it). proxy-init is the proxy binary plus the iptables tools for
# `weft-proxy init`; the long-running sidecar image stays without them.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
# musl-gcc builds ring's C and assembly for the static target; h2load, curl and
# llvm-tools are for the proxy's profile-guided build (proxy/pgo.sh), which trains it
# on loopback traffic inside this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools nghttp2-client curl \
    && rm -rf /var/lib/apt/lists/*
RUN rustup component add llvm-tools
RUN case "${TARGETARCH:-amd64}" in \
        arm64) echo aarch64-unknown-linux-musl ;; \
        amd64) echo x86_64-unknown-linux-musl ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
    && cargo build --release --locked --target "$target" \
        -p weft-control -p weft-inject -p weft-examples \
    && mkdir -p /out \
    && proxy/pgo.sh --target "$target" --profile sidecar --out /out/weft-proxy \
    && for bin in weft-control weftctl web orders payments notifications users inventory loadgen; do \
        cp "target/$target/release/$bin" /out/; \
    done

FROM gcr.io/distroless/static-debian12:nonroot AS examples
COPY --from=build /out/web /out/orders /out/payments /out/notifications /out/users \
    /out/inventory /out/loadgen /usr/local/bin/
USER 65532:65532
EXPOSE 8080

FROM debian:bookworm-slim AS proxy-init
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/weft-proxy /usr/local/bin/weft-proxy
# Runs as root with only NET_ADMIN and NET_RAW (the injector sets the pod's
# securityContext); nothing else in this image runs.
USER 0:0
ENTRYPOINT ["/usr/local/bin/weft-proxy"]
CMD ["init"]

FROM gcr.io/distroless/static-debian12:nonroot AS proxy
COPY --from=build /out/weft-proxy /usr/local/bin/weft-proxy
# The proxy's UID: iptables exempts its traffic from redirection.
USER 7102:7102
EXPOSE 7140 7143 7191
ENTRYPOINT ["/usr/local/bin/weft-proxy"]
CMD ["run"]

FROM gcr.io/distroless/static-debian12:nonroot AS control
COPY --from=build /out/weft-control /out/weftctl /usr/local/bin/
USER 65532:65532
EXPOSE 7443 7990 8443
ENTRYPOINT ["/usr/local/bin/weft-control"]
CMD ["serve"]

# syntax=docker/dockerfile:1
#
# order-worker image: a release build on the official Rust image (Debian 12), run from scratch
# with only the files the binary needs (about 14.4 MB; docs/deploy.md has the measured figures).
#
#   docker build -t registry.example.com/orders/order-worker:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg GIT_REVISION="$(git rev-parse --short=12 HEAD)" .
#
# scripts/check-deploy.sh checks this file without a Docker engine: it runs
# the builder's last steps on the host (Debian 12, the same toolchain): it executes every RUN
# below `COPY . .` verbatim in a copy of the build context, then starts the worker from the
# assembled root filesystem under chroot, read-only, as uid 65532, against PostgreSQL over TLS.
# Keep those RUN lines free of anything that would change the machine they run on.

# ---------------------------------------------------------------------------------------------
# chef: the Rust toolchain plus cargo-chef and cmake. The full (not -slim) image already has
# gcc, make, pkg-config, libssl-dev and zlib1g-dev; cmake builds the bundled librdkafka with a
# static libcurl, which SASL/OAUTHBEARER with OIDC needs (rdkafka's cmake-build feature).
# The release build replaces this image by its digest (.github/workflows/release.yml).
FROM rust:1.95.0-bookworm AS chef
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.1-1 \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
# OpenSSL linked statically from libssl-dev's archives: only what librdkafka and libcurl call
# goes into the binary (4.0 MB, against 5.4 MB of libssl.so.3 and libcrypto.so.3), and only the
# pages they touch become resident. openssl-sys reads these per target (the release builds
# amd64 and arm64); scripts/lib.sh exports the same lines for every release build on a host.
ENV OPENSSL_STATIC=1
ENV X86_64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR=/usr/lib/x86_64-linux-gnu
ENV X86_64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR=/usr/include
ENV AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR=/usr/lib/aarch64-linux-gnu
ENV AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR=/usr/include
# glibc, libgcc and zlib linked statically as well (crt-static, from libc6-dev's, libgcc's and
# zlib1g-dev's archives), so the image holds no shared library: 2.1 MB smaller than the binary
# plus the five libraries it would load, and ~1 MiB less RSS after a drain (only the parts of
# libc the worker calls are mapped, among its own pages). glibc's own NSS modules for files and
# DNS are in libc.a, so name lookups need nothing at run time. A proc macro cannot be linked
# statically, so every build names its target (`--target $(uname -m)-unknown-linux-gnu`): these
# flags then reach the worker and not the build scripts and proc macros the compiler loads.
# The release profile aborts on a panic (Cargo.toml), so nothing unwinds: the worker's code and
# the C libraries built here (librdkafka, libcurl, zstd) carry no unwind tables (0.3 MB of them
# for the C alone), and build.rs drops the rest at link (1.4 MB). CFLAGS_<target> reaches the
# cc and cmake builds of those crates.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Ctarget-feature=+crt-static -Cforce-unwind-tables=no"
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Ctarget-feature=+crt-static -Cforce-unwind-tables=no"
ENV CFLAGS_x86_64_unknown_linux_gnu="-fno-asynchronous-unwind-tables -fno-unwind-tables"
ENV CFLAGS_aarch64_unknown_linux_gnu="-fno-asynchronous-unwind-tables -fno-unwind-tables"
WORKDIR /app

# ---------------------------------------------------------------------------------------------
# planner: the recipe lists only manifests, the lock file and target names, so it (and the
# dependency layer keyed by it) changes only when dependencies or targets change.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /app/recipe.json recipe.json
# The dependency layer (rdkafka with its bundled librdkafka, sqlx, tokio, ...): about 3.5 of the
# 4 minutes of a clean release build on 2 cores. Editing src/ reuses it.
RUN cargo chef cook --release --locked --target "$(uname -m)-unknown-linux-gnu" --recipe-path recipe.json
COPY . .
# build.rs puts the revision into order_worker_build_info; the context has no .git. Declared
# after the dependency layer, so a new revision only rebuilds the crate itself.
ARG GIT_REVISION=unknown
# The build scripts/run.sh makes (release_env names the same target and flags): rdkafka's `ssl`
# feature (librdkafka with Debian's OpenSSL, linked statically: TLS, SASL PLAIN/SCRAM/
# OAUTHBEARER); sqlx uses rustls with webpki roots built in.
RUN cargo build --release --locked --target "$(uname -m)-unknown-linux-gnu"
# The runtime root filesystem, nothing else: the binary, which must load no shared library;
# CA certificates for Kafka TLS; a nonroot user; and, so image scanners (Trivy, Grype) see the
# C libraries inside the binary and their versions, os-release and one dpkg status file per
# package whose archives were linked in (glibc's libc6-dev, libgcc, zlib, OpenSSL's
# libssl-dev) in /var/lib/dpkg/status.d, the layout distroless uses.
RUN set -eux; \
    bin=target/$(uname -m)-unknown-linux-gnu/release/order-worker; \
    if readelf --dynamic "$bin" | grep NEEDED; then exit 1; fi; \
    rm -rf rootfs; \
    install -D -m 0755 "$bin" rootfs/usr/local/bin/order-worker; \
    install -d rootfs/etc/ssl/certs rootfs/var/lib/dpkg/status.d; \
    install -d -m 1777 rootfs/tmp; \
    for archive in libc.a libgcc_eh.a libz.a libssl.a; do \
      owner=$(dpkg -S "$(realpath "$(gcc -print-file-name="$archive")")"); \
      dpkg-query --status "${owner%%:*}" > "rootfs/var/lib/dpkg/status.d/${owner%%:*}"; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt rootfs/etc/ssl/certs/; \
    dpkg-query --status ca-certificates > rootfs/var/lib/dpkg/status.d/ca-certificates; \
    cp --dereference /etc/os-release /etc/debian_version rootfs/etc/; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > rootfs/etc/passwd; \
    echo 'nonroot:x:65532:' > rootfs/etc/group; \
    echo 'hosts: files dns' > rootfs/etc/nsswitch.conf; \
    du -sh rootfs

# ---------------------------------------------------------------------------------------------
# runtime: no shell, no package manager, no shared libraries. Scratch rather than distroless
# static-debian12, which would add tzdata and netbase (~2 MB) the worker never reads. Security
# updates of glibc and OpenSSL (linked in from the builder's libc6-dev and libssl-dev) arrive by
# rebuilding this image on a refreshed rust:*-bookworm, as with any base image.
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG GIT_REVISION=unknown
ARG SOURCE_URL=https://github.com/example-org/order-worker
LABEL org.opencontainers.image.title="order-worker" \
      org.opencontainers.image.description="Kafka-to-PostgreSQL order ingestion worker" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /app/rootfs/ /
# OpenSSL (librdkafka, libcurl, the HTTP clients) finds the CA bundle through this; its
# compiled-in default (/usr/lib/ssl) does not exist here. PostgreSQL TLS (rustls, roots compiled
# in) ignores it: a private CA goes in sslrootcert.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# glibc reads its malloc settings only from the environment at start. No per-thread caches and
# two arenas let the worker hand a drained backlog's memory back to the kernel (src/memory.rs); a
# 1 MiB mmap threshold keeps fetch responses and batch buffers in the heap instead of mapping
# each afresh, ~0.2 µs less CPU per event for ~3 MiB of peak (docs/performance.md#decisions).
# scripts/run.sh and the benchmark read this line, so the worker runs the same way everywhere.
ENV GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# /healthz, /readyz, /metrics, /lag (HTTP_ADDR defaults to 0.0.0.0:9090).
EXPOSE 9090
# No HEALTHCHECK: the image has no shell or HTTP client to run one, and Kubernetes ignores it;
# the Deployment's probes call /healthz and /readyz instead.
#checkov:skip=CKV_DOCKER_2:no shell or HTTP client in the image to run a HEALTHCHECK; Kubernetes probes /healthz and /readyz instead
ENTRYPOINT ["/usr/local/bin/order-worker"]
CMD ["run"]

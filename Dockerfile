# The Pulse gateway as a container image. The build runs the README's own scripts
# (scripts/setup.sh, scripts/build-tracker.sh, then the release build scripts/run.sh does), so the
# test suite exercises its steps even where no container engine runs (tests/tests/packaging.rs).
# The tracker is built before the gateway, which embeds it: the image needs no tracker folder.
#   docker build -t pulse .
#   docker run -p 8080:8080 -p 9090:9090 -v pulse-data:/var/lib/pulse pulse
# Configure it with PULSE_<TABLE>__<KEY> variables or a mounted /etc/pulse/pulse.toml.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# setup.sh also installs libssl-dev and pkg-config when missing (librdkafka's TLS and SASL), and
# binaryen (wasm-opt) and Node.js with terser for the tracker's build.
RUN scripts/setup.sh \
    && scripts/build-tracker.sh \
    && cargo build --release -p pulse-gateway --bin gateway

FROM debian:bookworm-slim
# The Kafka client links the system's OpenSSL; managed clusters' certificates are checked
# against the system's CAs (ca-certificates) unless ssl.ca.location names others.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home-dir /var/lib/pulse --create-home --uid 10001 pulse \
    && mkdir -p /etc/pulse /usr/share/pulse
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY --from=build /src/examples/site /usr/share/pulse/site
COPY --from=build /src/examples/pulse.toml /etc/pulse/pulse.toml
COPY --from=build /src/examples/bundles /etc/pulse/bundles
ENV PULSE_SERVER__LISTEN=0.0.0.0:8080 \
    PULSE_SERVER__ADMIN_LISTEN=0.0.0.0:9090 \
    PULSE_SERVER__DATA=/var/lib/pulse \
    PULSE_SERVER__SITE_DIR=/usr/share/pulse/site
USER pulse
WORKDIR /var/lib/pulse
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway", "--config", "/etc/pulse/pulse.toml", "--log-format", "json"]

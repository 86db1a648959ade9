# Build and run tidegate in a container (used by docker-compose.yml).
# The release image has no simulator, demo or benchmarks (`--no-default-features`); the
# development tools are one build argument away: --build-arg FEATURES=dev-tools.
FROM rust:1.95-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN cargo build --release -p tidegate --no-default-features ${FEATURES:+--features "$FEATURES"}

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tidegate /usr/local/bin/tidegate
COPY config /etc/tidegate/config
ENV TIDEGATE_CONFIG_DIR=/etc/tidegate/config
USER 65534
ENTRYPOINT ["/usr/local/bin/tidegate"]

# countersign container image: a static-enough release build on a small,
# non-root runtime. Paths and ports match the Helm chart:
#   config   /etc/countersign/config/countersign.yaml
#   policies /etc/countersign/policies
#   record   /var/lib/countersign (a volume)
#   ports    8080 (proxy), 9901 (admin)
#
#   docker build -t countersign .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin countersign \
 && strip target/release/countersign

# distroless/cc: glibc and libgcc only, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/countersign /usr/local/bin/countersign
# System roots for HTTPS upstreams (rustls-native-certs reads them here).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /var/lib/countersign
VOLUME ["/var/lib/countersign"]
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/countersign"]
CMD ["serve", "--config", "/etc/countersign/config/countersign.yaml"]

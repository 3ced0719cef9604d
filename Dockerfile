# remora: build the release binary, then ship it alone on a minimal base, as uid 1337 (Istio's proxy uid).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p remora-proxy && strip target/release/remora

FROM debian:bookworm-slim
RUN useradd --uid 1337 --no-create-home --shell /usr/sbin/nologin istio-proxy
COPY --from=build /src/target/release/remora /usr/local/bin/remora
USER 1337:1337
EXPOSE 15001 15006 15021 15090
# The admin API's /ready: 200 once the configuration is in and while not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
  CMD ["remora", "probe", "http://127.0.0.1:15000/ready"]
ENTRYPOINT ["remora"]
CMD ["-c", "/etc/remora/envoy.yaml"]

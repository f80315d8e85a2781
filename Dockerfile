# antenna in a container: built from the tree into the Debian package
# (make deb), installed in a slim Debian 12 image, run as the non-root user
# the package creates, the store in a volume, health from /health/ready.
#
#   docker build -t antenna .
#   docker run -p 1883:1883 -v antenna-data:/var/lib/antenna antenna
#
# Mount your own /etc/antenna/antenna.yaml (and password/ACL files) to add
# authentication: as shipped there is no authentication backend, and what
# that means on a listener that is not loopback is in docs/security.md.
# Not built on the development machine (no Docker engine there); the
# package inside it is built and tested by `make package-test`.
FROM debian:12 AS build
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential cmake pkg-config libyaml-dev libssl-dev librocksdb-dev libwslay-dev \
        libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libhiredis-dev libjwt-dev \
        dpkg-dev file && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    && cmake --build /build -j"$(nproc)" --target antenna \
    && cd /build && cpack -G DEB

FROM debian:12-slim
COPY --from=build /build/antenna_*.deb /tmp/
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        /tmp/antenna_*.deb && rm -rf /var/lib/apt/lists/* /tmp/antenna_*.deb
COPY packaging/docker.yaml /etc/antenna/antenna.yaml
USER antenna
WORKDIR /var/lib/antenna
ENV STATE_DIRECTORY=/var/lib/antenna
VOLUME /var/lib/antenna
EXPOSE 1883 8883 18083
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s \
    CMD ["antenna", "ctl", "--url", "http://127.0.0.1:18083", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["antenna"]
CMD ["-c", "/etc/antenna/antenna.yaml"]

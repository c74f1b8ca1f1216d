# m3rec worker image: built from the same Debian 12 packages as a developer machine.
FROM debian:12-slim AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config librdkafka-dev libavro-dev libopenblas-dev librocksdb-dev libcurl4-openssl-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY common common
COPY worker worker
COPY tools tools
COPY schemas schemas
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
    && cmake --build build -j"$(nproc)"

FROM debian:12-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librdkafka1 libavro23 libopenblas0-pthread librocksdb7.8 libcurl4 libmicrohttpd12 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/m3rec-worker /src/build/m3rec-sim /src/build/m3rec-report /usr/local/bin/
COPY config /etc/m3rec
ENV OPENBLAS_NUM_THREADS=1
VOLUME /var/lib/m3rec
ENTRYPOINT ["m3rec-worker"]
CMD ["--config", "/etc/m3rec/worker.properties"]

//! Codec throughput beside the physical limit, measured in the same run.
//!
//! For each payload size, about 1 MiB of frames is pushed through in 64 KiB reads, as a
//! socket would deliver them. `copy` only copies the same bytes into the same kind of
//! buffer (the baseline); `netstring` and `line` also decode every frame out of it.
//! Encoding is measured the same way against a plain copy of the payloads.
//!
//! Run: `cargo bench -p evapi-proto`; figures and ratios are in docs/benchmarks.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use evapi_proto::{FrameCodec, Framing};

const SIZES: [usize; 4] = [64, 512, 4096, 65536];
const STREAM_BYTES: usize = 1 << 20;
const READ_SIZE: usize = 64 * 1024;
const MAX_FRAME: usize = 1 << 20;

fn payloads(size: usize) -> Vec<Vec<u8>> {
    let count = (STREAM_BYTES / size).max(1);
    // JSON-ish printable bytes without LF, so every framing can carry them.
    (0..count)
        .map(|i| (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect())
        .collect()
}

fn wire(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let codec = FrameCodec::new(framing, MAX_FRAME);
    let mut out = BytesMut::new();
    for p in payloads {
        codec.encode_frame(p, &mut out).expect("bench payloads fit");
    }
    out.to_vec()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for size in SIZES {
        let payloads = payloads(size);
        for framing in [Framing::Netstring, Framing::Line] {
            let stream = wire(framing, &payloads);
            group.throughput(Throughput::Bytes(stream.len() as u64));
            if framing == Framing::Netstring {
                group.bench_with_input(BenchmarkId::new("copy", size), &stream, |b, stream| {
                    let mut buf = BytesMut::with_capacity(READ_SIZE);
                    b.iter(|| {
                        for chunk in stream.chunks(READ_SIZE) {
                            buf.extend_from_slice(chunk);
                            black_box(&buf);
                            buf.clear();
                        }
                    });
                });
            }
            group.bench_with_input(
                BenchmarkId::new(framing.name(), size),
                &stream,
                |b, stream| {
                    let mut codec = FrameCodec::new(framing, MAX_FRAME);
                    let mut buf = BytesMut::with_capacity(READ_SIZE);
                    b.iter(|| {
                        let mut frames = 0usize;
                        for chunk in stream.chunks(READ_SIZE) {
                            buf.extend_from_slice(chunk);
                            while let Some(frame) =
                                codec.decode_frame(&mut buf).expect("bench stream is valid")
                            {
                                black_box(&frame);
                                frames += 1;
                            }
                        }
                        assert_eq!(frames, payloads.len());
                    });
                },
            );
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let payloads = payloads(size);
        let total: usize = wire(Framing::Netstring, &payloads).len();
        group.throughput(Throughput::Bytes(total as u64));
        group.bench_with_input(BenchmarkId::new("copy", size), &payloads, |b, payloads| {
            let mut dst = BytesMut::with_capacity(2 * READ_SIZE);
            b.iter(|| {
                for p in payloads {
                    dst.extend_from_slice(p);
                    if dst.len() >= READ_SIZE {
                        black_box(&dst);
                        dst.clear();
                    }
                }
                dst.clear();
            });
        });
        for framing in [Framing::Netstring, Framing::Line] {
            group.bench_with_input(
                BenchmarkId::new(framing.name(), size),
                &payloads,
                |b, payloads| {
                    let codec = FrameCodec::new(framing, MAX_FRAME);
                    let mut dst = BytesMut::with_capacity(2 * READ_SIZE);
                    b.iter(|| {
                        for p in payloads {
                            codec.encode_frame(p, &mut dst).expect("bench payloads fit");
                            if dst.len() >= READ_SIZE {
                                black_box(&dst);
                                dst.clear();
                            }
                        }
                        dst.clear();
                    });
                },
            );
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode
}
criterion_main!(benches);

//! Integration tests of evapi-proto, one module per concern.

// Any payloads, any chunking, every framing: decode(encode(x)) == x.
mod roundtrip;
// The messages a person reads when a peer sends bad bytes, snapshotted.
mod errors;

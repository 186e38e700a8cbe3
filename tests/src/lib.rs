//! End-to-end suite across the binaries; filled as the binaries land.

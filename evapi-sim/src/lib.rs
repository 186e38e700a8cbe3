//! evapi-sim: skeleton; filled by its issue.

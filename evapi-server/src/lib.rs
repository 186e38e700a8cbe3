//! evapi-server: skeleton; filled by its issue.

//! evapi-client: skeleton; filled by its issue.

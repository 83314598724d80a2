//! Shared helpers for Baton's end-to-end tests.

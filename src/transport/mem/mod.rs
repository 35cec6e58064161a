//! PLACEHOLDER (to be replaced): mem backend.

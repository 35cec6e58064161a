//! PLACEHOLDER (to be replaced): tcp backend.

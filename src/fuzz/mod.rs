//! Fuzzing the parsers that face the network or the user (the store protocol, greetings,
//! transport headers, unique ids, topology files). Each [`targets`] function takes any
//! bytes, runs the parser, and panics only when a property breaks (a decoded value that
//! does not round-trip, a changed greeting or handshake that is accepted). Two drivers run
//! them: the ordinary test run, a bounded number of seeded mutations each (`mutate`), and
//! libFuzzer through `cargo fuzz` (the `fuzz/` crate, with the `fuzzing` feature), whose
//! corpora are committed and replayed by the test run.

#[cfg(test)]
mod mutate;
pub mod targets;

#[cfg(test)]
pub(crate) use mutate::inputs;

#[cfg(test)]
mod corpus_tests;

//! Every adapter against a fake server that answers with the seed
//! documents' own examples (tests/fixtures/, verbatim) and with crafted
//! failures.

// A test crate: panicking on the unexpected is the point, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod errors;
mod recorded;
mod secrets;
mod ugclab;
mod ugen;
mod ulazai;
mod viggle;

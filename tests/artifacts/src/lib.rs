//! Paths of the guest components built from source by this crate's build script.
//!
//! Plugins (`plugins/*`) and test guests (`tests/guests/*`) get one constant each, named after
//! the crate in upper snake case: `TEXT_STATS`, `PROBE`...

include!(concat!(env!("OUT_DIR"), "/gen.rs"));

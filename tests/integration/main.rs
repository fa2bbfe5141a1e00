//! Integration tests: real components built from source, driven through the `phasegate` CLI.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap should fail loudly"
)]

mod authoring;
mod authors;
mod cache;
mod cli;
mod display;
mod docs;
mod fuzz;
mod golden;
mod harness;
mod layers;
mod policies;
mod remote;
mod report;
mod resume;
mod reuse;
mod runner;
mod sandbox;
mod schema;
mod store;

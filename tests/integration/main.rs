//! Integration tests: real components built from source, driven through the `phasegate` CLI.

mod cli;
mod golden;
mod harness;
mod resume;
mod runner;

//! `phasegate schema`.

use clap::Args;

use super::Exit;

/// Print the JSON Schema of the pipeline file.
///
/// Generated from the types the pipeline is read with. Save it beside your pipelines and point
/// your editor at it with a first line `#:schema ./pipeline.schema.json` (taplo, Even Better
/// TOML) for completion and checking as you type. `validate` checks what a schema cannot: unique
/// ids, files that exist, what templates refer to.
#[derive(Args)]
pub struct SchemaArgs {}

impl SchemaArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        println!(
            "{}",
            serde_json::to_string_pretty(&phasegate_model::pipeline::schema())?
        );
        Ok(Exit::Success)
    }
}

//! `phasegate plugin sign PATH --key SECRET`.

use std::path::PathBuf;

use clap::Args;
use phasegate_store::{fetch, trust};

use super::password;
use crate::{Exit, bad_input};

/// Sign a component with a minisign secret key: writes PATH.minisig, which `plugin add` and
/// `plugin publish` pick up (and which `minisign -Vm PATH -p KEY.pub` verifies).
#[derive(Args)]
pub struct SignArgs {
    /// The component file.
    path: PathBuf,
    /// The secret key file (from `phasegate key generate`).
    #[arg(long)]
    key: PathBuf,
    /// The environment variable holding the key's password, for an encrypted key.
    #[arg(long)]
    password_env: Option<String>,
}

impl SignArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| bad_input(format!("cannot read {}: {e}", self.path.display())))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let signed = trust::sign(&self.key, password(&self.password_env)?, &bytes, &name)
            .map_err(|e| bad_input(format!("{e:#}")))?;
        let out = fetch::signature_path(&self.path);
        std::fs::write(&out, &signed.text)
            .map_err(|e| bad_input(format!("cannot write {}: {e}", out.display())))?;
        println!(
            "signed {} with key {} -> {}",
            self.path.display(),
            signed.key_id,
            out.display()
        );
        Ok(Exit::Success)
    }
}

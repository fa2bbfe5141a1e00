//! `phasegate key generate PREFIX`: a minisign key pair for signing plugins.

use std::path::PathBuf;

use clap::Args;
use phasegate_store::trust;

use crate::plugin::password;
use crate::{Exit, bad_input};

/// Manage signing keys.
#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(clap::Subcommand)]
enum KeyCommand {
    /// Generate a minisign key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    ///
    /// Without --password-env the secret key is not encrypted (for CI signing with the key in a
    /// secret store); with it, it is encrypted as minisign does.
    Generate {
        /// Where to write the keys (PREFIX.key and PREFIX.pub).
        prefix: PathBuf,
        /// The environment variable holding a password to encrypt the secret key with.
        #[arg(long)]
        password_env: Option<String>,
    },
}

impl KeyArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let KeyCommand::Generate {
            prefix,
            password_env,
        } = self.command;
        let files = trust::generate(&prefix, password(&password_env)?)
            .map_err(|e| bad_input(format!("{e:#}")))?;
        println!("secret key: {}", files.secret.display());
        println!(
            "public key: {} (key id {})",
            files.public.display(),
            files.key_id
        );
        println!("to trust it, add to phasegate-trust.toml:\n");
        println!("[[key]]");
        println!(
            "name = \"{}\"",
            prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        println!("public-key = \"{}\"", files.public_line);
        Ok(Exit::Success)
    }
}

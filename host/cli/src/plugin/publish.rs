//! `phasegate plugin publish PATH oci://…`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use phasegate_engine::install;
use phasegate_store::oci::{self, OciRef};
use phasegate_store::{fetch, trust};

use super::{host, password};
use crate::{Exit, bad_input};

/// Push a component to an OCI registry in the Wasm OCI artifact layout (the one wkg uses),
/// with its signature beside it when it has one (PATH.minisig, or made now with --key).
#[derive(Args)]
pub struct PublishArgs {
    /// The component file.
    path: PathBuf,
    /// Where to push: oci://registry/repository:tag.
    reference: String,
    /// Sign it now with this minisign secret key (also writes PATH.minisig).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The environment variable holding the key's password, for an encrypted key.
    #[arg(long)]
    password_env: Option<String>,
}

impl PublishArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let reference = OciRef::parse(&self.reference).map_err(|e| bad_input(format!("{e:#}")))?;
        let bytes = std::fs::read(&self.path)
            .map_err(|e| bad_input(format!("cannot read {}: {e}", self.path.display())))?;
        let runtime = crate::runtime()?;
        let host = host(None)?;
        let label = self.path.display().to_string();
        let examined = runtime
            .block_on(install::examine(&host, &label, &bytes))
            .map_err(|e| bad_input(format!("refusing to publish: {e:#}")))?;
        let sig_path = fetch::signature_path(&self.path);
        let signature = match &self.key {
            Some(key) => {
                let name = self
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let signed = trust::sign(key, password(&self.password_env)?, &bytes, &name)
                    .map_err(|e| bad_input(format!("{e:#}")))?;
                std::fs::write(&sig_path, &signed.text)?;
                Some(signed.text)
            }
            None => std::fs::read_to_string(&sig_path).ok(),
        };
        let m = &examined.metadata;
        let annotations = BTreeMap::from([
            ("org.opencontainers.image.title".to_owned(), m.name.clone()),
            (
                "org.opencontainers.image.version".to_owned(),
                m.version.clone(),
            ),
            (
                "org.opencontainers.image.description".to_owned(),
                m.description.clone(),
            ),
            (
                "org.opencontainers.image.created".to_owned(),
                phasegate_store::lock::now_rfc3339(),
            ),
        ]);
        let info = oci::component_info(&bytes, &examined.world.to_string());
        let manifest = runtime
            .block_on(oci::push(
                &reference,
                bytes,
                info,
                annotations,
                signature.as_deref(),
            ))
            .map_err(|e| bad_input(format!("{e:#}")))?;
        println!("published {} {} to {reference}", m.name, m.version);
        println!("  component: {}", examined.digest);
        println!("  manifest:  {}", reference.at_digest(&manifest));
        println!(
            "  signature: {}",
            if signature.is_some() {
                format!("pushed as {}", oci::signature_tag(&examined.digest))
            } else {
                "none (sign with --key, or `phasegate plugin sign` first)".into()
            }
        );
        Ok(Exit::Success)
    }
}

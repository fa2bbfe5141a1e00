//! Signatures and the trust policy.
//!
//! Plugins are signed with **minisign** (Ed25519) keys: a signature is a `.minisig` file beside
//! the component (or, in an OCI registry, an artifact tagged `sha256-<hex>.minisig` beside it),
//! readable by the `minisign` tool itself (`minisign -Vm plugin.wasm -p key.pub`). Keys are
//! made with `phasegate key generate`.
//!
//! The trust policy is `phasegate-trust.toml` beside the lock:
//!
//! ```toml
//! # Refuse unsigned plugins and unknown keys (default false: an unsigned plugin is installed
//! # and recorded as unsigned). A signature that does not verify is always refused.
//! require-signed = true
//!
//! [[key]]
//! name = "acme"                                  # shown in the lock and by `plugin inspect`
//! public-key = "RWQ…"                            # the key line of a minisign .pub file
//! plugins = ["text-stats"]                       # installed names this key may sign …
//! sources = ["oci://registry.example.com/acme/"] # … or source prefixes (a publisher)
//! # with neither `plugins` nor `sources`, the key may sign any plugin
//! ```

use std::fmt;
use std::io::Cursor;
use std::path::Path;

use anyhow::Context as _;
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use serde::Deserialize;

use phasegate_model::error::Problem;

use super::lock::{SignatureRecord, SignatureStatus};

/// The trust policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Fail closed on unsigned plugins and untrusted keys.
    #[serde(default)]
    pub require_signed: bool,
    /// Trusted keys.
    #[serde(default, rename = "key")]
    pub keys: Vec<TrustedKey>,
}

/// A trusted key and what it may sign.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustedKey {
    /// Who holds the key.
    pub name: String,
    /// The minisign public key (its base64 line, or the whole `.pub` file's text).
    pub public_key: String,
    /// Installed names the key may sign.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Source prefixes the key may sign (a publisher's registry path).
    #[serde(default)]
    pub sources: Vec<String>,
}

impl TrustedKey {
    fn allows(&self, name: &str, source: &str) -> bool {
        (self.plugins.is_empty() && self.sources.is_empty())
            || self.plugins.iter().any(|p| p == name)
            || self.sources.iter().any(|s| source.starts_with(s.as_str()))
    }
}

/// A signature that must not be accepted whatever the policy says.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The signature file is not a minisign signature.
    #[error("the signature is not a minisign signature ({0})")]
    Malformed(String),
    /// The signature does not match the bytes: the artifact or the signature was altered.
    #[error(
        "the signature by {signer} (key {key_id}) does not match the component's bytes: the artifact or its signature was tampered with"
    )]
    BadSignature {
        /// The policy's name of the key.
        signer: String,
        /// The key id.
        key_id: String,
    },
}

impl Policy {
    /// Reads the policy at `path`; no file is the empty policy (nothing trusted, nothing required).
    pub fn load(path: &Path) -> anyhow::Result<Policy> {
        let policy: Policy =
            super::read_toml(path, "see the trust policy format in docs/plugins.md")?;
        for k in &policy.keys {
            parse_public_key(&k.public_key).map_err(|e| {
                Problem::new(format!(
                    "{}: key `{}`: `public-key` is not a minisign public key ({e})",
                    path.display(),
                    k.name
                ))
                .help("paste the second line of the key's .pub file")
            })?;
        }
        Ok(policy)
    }

    /// Checks a component's signature (if any) for the plugin `name` fetched from `source`.
    /// A signature that does not verify is an error; everything else is a record for the
    /// caller to [`enforce`](Policy::enforce).
    pub fn check(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        name: &str,
        source: &str,
    ) -> Result<SignatureRecord, TrustError> {
        let Some(signature) = signature else {
            return Ok(SignatureRecord {
                status: SignatureStatus::Unsigned,
                key_id: None,
                signer: None,
            });
        };
        let sig = SignatureBox::from_string(signature)
            .map_err(|e| TrustError::Malformed(e.to_string()))?;
        let key_id = key_id(sig.keynum());
        let known = self.keys.iter().find_map(|k| {
            let pk = parse_public_key(&k.public_key).ok()?;
            (key_id_of(&pk) == key_id).then_some((k, pk))
        });
        let Some((key, pk)) = known else {
            return Ok(SignatureRecord {
                status: SignatureStatus::UntrustedKey,
                key_id: Some(key_id),
                signer: None,
            });
        };
        minisign::verify(&pk, &sig, Cursor::new(bytes), true, false, false).map_err(|_| {
            TrustError::BadSignature {
                signer: key.name.clone(),
                key_id: key_id.clone(),
            }
        })?;
        Ok(SignatureRecord {
            status: if key.allows(name, source) {
                SignatureStatus::Verified
            } else {
                SignatureStatus::KeyNotAllowed
            },
            key_id: Some(key_id),
            signer: Some(key.name.clone()),
        })
    }

    /// Whether a record passes: anything but a verified signature fails when signatures are
    /// required (by the policy or by `--require-signed`).
    pub fn enforce(&self, record: &SignatureRecord, require_signed: bool) -> Result<(), Problem> {
        if (self.require_signed || require_signed) && record.status != SignatureStatus::Verified {
            let why = if self.require_signed {
                "the trust policy requires signed plugins"
            } else {
                "--require-signed"
            };
            return Err(Problem::new(format!("{record}; {why}")).help("trust its key in phasegate-trust.toml (`[[key]]` with `name` and `public-key`), or ask its publisher to sign it (`phasegate plugin sign`)"));
        }
        Ok(())
    }
}

impl Policy {
    /// [`check`](Policy::check) then [`enforce`](Policy::enforce): the record when the plugin
    /// may be used, else why not.
    pub fn judge(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        name: &str,
        source: &str,
        require_signed: bool,
    ) -> Result<SignatureRecord, String> {
        let record = self
            .check(bytes, signature, name, source)
            .map_err(|e| e.to_string())?;
        self.enforce(&record, require_signed)
            .map_err(|p| p.to_string())?;
        Ok(record)
    }
}

/// A key id as minisign prints it: 16 uppercase hex digits.
fn key_id(keynum: &[u8]) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(n))
}

fn key_id_of(pk: &PublicKey) -> String {
    key_id(pk.keynum())
}

fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    PublicKey::from_base64(line).map_err(|e| e.to_string())
}

/// A new key pair, written as `PREFIX.key` (secret, mode 0600) and `PREFIX.pub`. With a
/// password the secret key is encrypted (scrypt), as minisign does by default.
pub fn generate(prefix: &Path, password: Option<String>) -> anyhow::Result<KeyFiles> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(
                Problem::new(format!("{} exists; not overwriting a key", p.display()))
                    .help("choose another name")
                    .into(),
            );
        }
    }
    let pair = match password {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let public = pair
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    let secret = pair
        .sk
        .to_box(None)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    f.write_all(secret.as_bytes())?;
    std::fs::write(&public_path, &public)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    Ok(KeyFiles {
        secret: secret_path,
        public: public_path,
        key_id: key_id_of(&pair.pk),
        public_line: pair.pk.to_base64(),
    })
}

/// What [`generate`] wrote.
pub struct KeyFiles {
    /// The secret key file.
    pub secret: std::path::PathBuf,
    /// The public key file.
    pub public: std::path::PathBuf,
    /// The key id.
    pub key_id: String,
    /// The public key's base64 line (what the trust policy's `public-key` holds).
    pub public_line: String,
}

/// Signs `bytes` with the secret key at `key_path`: the text of a `.minisig` file.
pub fn sign(
    key_path: &Path,
    password: Option<String>,
    bytes: &[u8],
    file_name: &str,
) -> anyhow::Result<Signed> {
    let text = std::fs::read_to_string(key_path)
        .with_context(|| format!("cannot read the secret key {}", key_path.display()))?;
    let boxed = SecretKeyBox::from_string(&text).map_err(|e| {
        anyhow::anyhow!("{} is not a minisign secret key ({e})", key_path.display())
    })?;
    let sk: SecretKey = match password {
        Some(pw) => boxed.into_secret_key(Some(pw)),
        None => boxed.into_unencrypted_secret_key(),
    }
    .map_err(|e| {
        Problem::new(format!(
            "cannot open the secret key {} ({e})",
            key_path.display()
        ))
        .help("an encrypted key needs its password: --password-env VAR")
    })?;
    let pk = PublicKey::from_secret_key(&sk).map_err(|e| anyhow::anyhow!("{e}"))?;
    let comment = format!(
        "timestamp:{}\tfile:{file_name}\thashed",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let sig = minisign::sign(Some(&pk), &sk, Cursor::new(bytes), Some(&comment), None)
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    Ok(Signed {
        text: sig.into_string(),
        key_id: key_id_of(&pk),
    })
}

/// A signature made by [`sign`].
pub struct Signed {
    /// The `.minisig` text.
    pub text: String,
    /// The key id that signed.
    pub key_id: String,
}

/// The key id of a public key file or line (for messages).
pub fn public_key_id(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    PublicKeyBox::from_string(text)
        .ok()
        .and_then(|b| b.into_public_key().ok())
        .or_else(|| PublicKey::from_base64(line).ok())
        .map(|pk| key_id_of(&pk))
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trusted key(s){}",
            self.keys.len(),
            if self.require_signed {
                ", signatures required"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_for(files: &KeyFiles, plugins: &[&str]) -> Policy {
        Policy {
            require_signed: false,
            keys: vec![TrustedKey {
                name: "acme".into(),
                public_key: files.public_line.clone(),
                plugins: plugins.iter().map(|s| s.to_string()).collect(),
                sources: vec![],
            }],
        }
    }

    #[test]
    fn sign_verify_tamper_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate(&dir.path().join("acme"), None).unwrap();
        let bytes = b"a component";
        let sig = sign(&keys.secret, None, bytes, "x.wasm").unwrap();
        assert_eq!(sig.key_id, keys.key_id);

        let policy = policy_for(&keys, &[]);
        let rec = policy.check(bytes, Some(&sig.text), "tool", "src").unwrap();
        assert_eq!(rec.status, SignatureStatus::Verified);
        assert_eq!(rec.signer.as_deref(), Some("acme"));
        assert!(policy.enforce(&rec, true).is_ok());

        // Other bytes: refused whatever the policy.
        assert!(matches!(
            policy.check(b"another component", Some(&sig.text), "tool", "src"),
            Err(TrustError::BadSignature { .. })
        ));
        // A key scoped to another plugin.
        let scoped = policy_for(&keys, &["other"]);
        let rec = scoped.check(bytes, Some(&sig.text), "tool", "src").unwrap();
        assert_eq!(rec.status, SignatureStatus::KeyNotAllowed);
        assert!(scoped.enforce(&rec, true).is_err());
        assert!(scoped.enforce(&rec, false).is_ok());
        // Nobody trusted.
        let rec = Policy::default()
            .check(bytes, Some(&sig.text), "tool", "src")
            .unwrap();
        assert_eq!(rec.status, SignatureStatus::UntrustedKey);
        assert_eq!(rec.key_id.as_deref(), Some(keys.key_id.as_str()));
        // Unsigned.
        let rec = policy.check(bytes, None, "tool", "src").unwrap();
        assert!(policy.enforce(&rec, false).is_ok());
        assert!(policy.enforce(&rec, true).is_err());
    }

    #[test]
    fn encrypted_keys_need_their_password() {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate(&dir.path().join("k"), Some("pw".into())).unwrap();
        assert!(sign(&keys.secret, None, b"x", "x").is_err());
        assert!(sign(&keys.secret, Some("wrong".into()), b"x", "x").is_err());
        assert!(sign(&keys.secret, Some("pw".into()), b"x", "x").is_ok());
        assert_eq!(
            public_key_id(&std::fs::read_to_string(&keys.public).unwrap()),
            Some(keys.key_id)
        );
    }
}

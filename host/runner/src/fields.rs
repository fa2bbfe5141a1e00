//! Length-prefixed fields hashed into one digest: what a task's key ([`crate::key`]) and a
//! read-only tree's digest ([`crate::tree`]) are made of.

use sha2::{Digest, Sha256};

/// Changes whenever what goes into a key changes, so that no old key can match a new one.
const FORMAT: &[u8] = b"phasegate key 2";

/// Length-prefixed fields, so that no two different lists of fields are the same bytes; hashed
/// at once when finished (one pass of SHA-256 over a buffer costs a fraction of feeding the
/// hasher dozens of small pieces: a task's key is made for every task).
pub(crate) struct Fields(pub(crate) Vec<u8>);

impl Fields {
    pub(crate) fn new(kind: &str) -> Self {
        let mut fields = Fields(Vec::with_capacity(512));
        fields.0.extend_from_slice(FORMAT);
        fields.add(kind.as_bytes());
        fields
    }

    pub(crate) fn add(&mut self, bytes: &[u8]) -> &mut Self {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub(crate) fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.add(name.as_bytes()).add(value.as_bytes())
    }

    pub(crate) fn finish(self) -> String {
        text(Sha256::digest(&self.0).into())
    }
}

/// A digest as a key's text: `sha256:` and 64 hex digits.
pub(crate) fn text(digest: [u8; 32]) -> String {
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(digest, &mut hex);
    let mut key = String::with_capacity(71);
    key.push_str("sha256:");
    key.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    key
}

//! Content digests, written `sha256:<hex>`.

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of some bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

//! Where a plugin comes from, and fetching it: a local path, an `https://` URL (plain `http://`
//! only on loopback), or an `oci://` reference. A signature comes along when the source has one:
//! `FILE.minisig` beside a path, `URL.minisig` beside a URL, the `sha256-<hex>.minisig` tag
//! beside an OCI artifact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use phasegate_model::error::Problem;

use super::chain;
use super::oci::{self, OciRef};

/// Downloads larger than this are refused: an interpreter-based component is tens of MB.
pub const MAX_DOWNLOAD: u64 = 512 << 20;

/// A plugin source.
#[derive(Clone, Debug)]
pub enum Source {
    /// A component file.
    Path(PathBuf),
    /// An `https://` (or loopback `http://`) URL.
    Url(String),
    /// An OCI artifact.
    Oci(OciRef),
}

/// What a fetch brought.
pub struct Fetched {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// Its signature's text, if the source has one.
    pub signature: Option<String>,
    /// What the source resolved to, when that says more than the source (an OCI manifest
    /// digest, an absolute path).
    pub resolved: Option<String>,
}

impl Source {
    /// Parses a source; relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Source> {
        if text.starts_with(oci::SCHEME) {
            return Ok(Source::Oci(OciRef::parse(text)?));
        }
        if let Some(rest) = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
        {
            let host = rest.split('/').next().unwrap_or("");
            if host.contains('@') {
                anyhow::bail!(
                    "`{text}` carries credentials, which would be written to phasegate.lock; serve the plugin without them, or publish it to an OCI registry (credentials come from the Docker config or PHASEGATE_REGISTRY_USERNAME/PASSWORD and are never recorded)"
                );
            }
            if text.starts_with("http://") && !oci::is_loopback(host) {
                anyhow::bail!("`{text}`: plain http is allowed only on loopback; use https://");
            }
            return Ok(Source::Url(text.to_owned()));
        }
        if text.contains("://") {
            anyhow::bail!(
                "`{text}`: unknown scheme; a source is a path, an https:// URL or an oci:// reference"
            );
        }
        Ok(Source::Path(base.join(text)))
    }

    /// Fetches the component and its signature.
    pub async fn fetch(&self) -> anyhow::Result<Fetched> {
        match self {
            Source::Path(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let sig_path = signature_path(path);
                let signature = match std::fs::read_to_string(&sig_path) {
                    Ok(s) => Some(s),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot read {}", sig_path.display()));
                    }
                };
                Ok(Fetched {
                    bytes,
                    signature,
                    resolved: std::fs::canonicalize(path)
                        .ok()
                        .map(|p| p.display().to_string()),
                })
            }
            Source::Url(url) => {
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(300))
                    .build()
                    .context("cannot set up an HTTP client")?;
                let bytes = download(&client, url)
                    .await?
                    .with_context(|| format!("{url}: not found (HTTP 404)"))?;
                let signature = match download(&client, &format!("{url}.minisig")).await? {
                    Some(b) => Some(
                        String::from_utf8(b)
                            .with_context(|| format!("{url}.minisig is not text"))?,
                    ),
                    None => None,
                };
                Ok(Fetched {
                    bytes,
                    signature,
                    resolved: None,
                })
            }
            Source::Oci(reference) => {
                let pulled = oci::pull(reference).await?;
                Ok(Fetched {
                    bytes: pulled.bytes,
                    signature: pulled.signature,
                    resolved: Some(reference.at_digest(&pulled.manifest_digest)),
                })
            }
        }
    }
}

/// `FILE.minisig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

/// GETs a URL: `None` on 404, an error on any other failure.
async fn download(client: &reqwest::Client, url: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut response = client.get(url).send().await.map_err(|e| {
        Problem::new(format!("cannot fetch {url}: {}", chain(&e)))
            .help("check the URL and that the server is reachable from here")
    })?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        anyhow::bail!(
            "cannot fetch {url}: the server answered {}",
            response.status()
        );
    }
    if response.content_length().is_some_and(|n| n > MAX_DOWNLOAD) {
        anyhow::bail!("{url} is larger than {MAX_DOWNLOAD} bytes; refusing to download it");
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("cannot fetch {url}: {}", chain(&e)))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_DOWNLOAD {
            anyhow::bail!("{url} is larger than {MAX_DOWNLOAD} bytes; refusing to download it");
        }
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let base = Path::new("/project");
        assert!(matches!(
            Source::parse("plugins/x.wasm", base).unwrap(),
            Source::Path(p) if p == Path::new("/project/plugins/x.wasm")
        ));
        assert!(matches!(
            Source::parse("https://example.com/x.wasm", base).unwrap(),
            Source::Url(_)
        ));
        assert!(Source::parse("http://127.0.0.1:8080/x.wasm", base).is_ok());
        assert!(Source::parse("http://example.com/x.wasm", base).is_err());
        assert!(Source::parse("https://user:pw@example.com/x.wasm", base).is_err());
        assert!(Source::parse("ftp://example.com/x.wasm", base).is_err());
        assert!(matches!(
            Source::parse("oci://ghcr.io/acme/x:1", base).unwrap(),
            Source::Oci(_)
        ));
    }
}

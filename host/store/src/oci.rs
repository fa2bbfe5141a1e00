//! OCI registries, in the CNCF Wasm OCI artifact layout that wkg / wasm-pkg-tools use: an OCI
//! image manifest with one `application/wasm` layer (the component) and a config of media type
//! `application/vnd.wasm.config.v0+json` (`{created, author, architecture: "wasm", os: "wasip2",
//! layerDigests, component: {exports, imports, target}}`). Talks to the registry through the
//! `oci-client` crate (the oras project's client).
//!
//! A plugin's minisign signature is pushed beside it as its own small artifact, tagged
//! `sha256-<hex of the component>.minisig` (the way cosign tags signatures), so it can be added
//! after publishing and found from the component's digest alone.
//!
//! Registries on loopback (`localhost`, `127.x.x.x`, `[::1]`) are spoken to over plain HTTP, as
//! Docker does; every other registry over HTTPS.
//!
//! Credentials, in this order: `PHASEGATE_REGISTRY_USERNAME` + `PHASEGATE_REGISTRY_PASSWORD`;
//! the Docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): its
//! `credHelpers`/`credsStore` helper, else its `auths` entry; else anonymous. They are used for
//! the request only and never written anywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context as _;
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use phasegate_model::error::Problem;
use serde::{Deserialize, Serialize};

/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the Wasm config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of a signature layer (and artifact type of its manifest).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.phasegate.minisign.signature.v1";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The `oci://` scheme prefix.
pub const SCHEME: &str = "oci://";

/// The Wasm config blob (field names as wkg writes them).
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// When it was pushed (RFC 3339).
    pub created: String,
    /// Who pushed it.
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for components.
    pub os: String,
    /// Digests of the layers.
    pub layer_digests: Vec<String>,
    /// What the component imports and exports.
    pub component: Option<ComponentInfo>,
}

/// The component part of [`WasmConfig`].
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    /// Exported names.
    pub exports: Vec<String>,
    /// Imported names.
    pub imports: Vec<String>,
    /// The world it targets, if known.
    pub target: Option<String>,
}

/// A parsed `oci://registry/repository[:tag|@sha256:…]` reference.
#[derive(Clone, Debug)]
pub struct OciRef(Reference);

impl OciRef {
    /// Parses `oci://…` (the scheme is required so that paths and references never mix).
    pub fn parse(text: &str) -> anyhow::Result<OciRef> {
        let rest = text.strip_prefix(SCHEME).with_context(|| {
            format!("`{text}` is not an OCI reference; write `oci://registry/repository:tag`")
        })?;
        if !rest.contains('/') {
            anyhow::bail!(
                "`{text}` names no repository; write `oci://registry/repository:tag` (e.g. oci://ghcr.io/acme/text-stats:1.0.0)"
            );
        }
        let reference = Reference::from_str(rest).map_err(|e| {
            anyhow::anyhow!(
                "`{text}` is not a valid OCI reference ({e}); write `oci://registry/repository:tag` or `…@sha256:<digest>`"
            )
        })?;
        Ok(OciRef(reference))
    }

    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The same repository at a manifest digest.
    pub fn at_digest(&self, digest: &str) -> String {
        format!(
            "{SCHEME}{}/{}@{digest}",
            self.0.registry(),
            self.0.repository()
        )
    }

    fn with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.0.registry().to_owned(),
            self.0.repository().to_owned(),
            tag.to_owned(),
        )
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.0.whole())
    }
}

/// What a pull brought.
pub struct Pulled {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The signature's text, when one is published beside it.
    pub signature: Option<String>,
}

/// Whether a registry is on loopback (spoken to over HTTP).
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| registry.split(':').next().unwrap_or(registry));
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

fn client(registry: &str) -> Client {
    let protocol = if is_loopback(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        read_timeout: Some(std::time::Duration::from_secs(60)),
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        ..ClientConfig::default()
    })
}

/// Pulls a component (and its signature, if published) from a registry.
pub async fn pull(reference: &OciRef) -> anyhow::Result<Pulled> {
    let auth = credentials(reference.registry())?;
    let client = client(reference.registry());
    let image = client
        .pull(&reference.0, &auth, vec![WASM_LAYER_MEDIA_TYPE])
        .await
        .map_err(|e| registry_error(reference, "pull", e))?;
    if image.config.media_type != CONFIG_MEDIA_TYPE {
        anyhow::bail!(
            "{reference} is not a Wasm artifact: its config is `{}`, not `{CONFIG_MEDIA_TYPE}`",
            image.config.media_type
        );
    }
    let [layer] = image.layers.as_slice() else {
        anyhow::bail!(
            "{reference} has {} layers; a Wasm component artifact has exactly one `{WASM_LAYER_MEDIA_TYPE}` layer",
            image.layers.len()
        );
    };
    let bytes = layer.data.to_vec();
    let digest = phasegate_model::digest::sha256_bytes(&bytes);
    if let Some(manifest) = &image.manifest
        && manifest.layers.first().map(|l| l.digest.as_str()) != Some(digest.as_str())
    {
        anyhow::bail!(
            "{reference}: the layer's bytes hash to {digest}, not to the digest its manifest names"
        );
    }
    let signature = pull_signature(&client, reference, &auth, &digest).await?;
    Ok(Pulled {
        bytes,
        manifest_digest: image.digest.unwrap_or_default(),
        signature,
    })
}

async fn pull_signature(
    client: &Client,
    reference: &OciRef,
    auth: &RegistryAuth,
    digest: &str,
) -> anyhow::Result<Option<String>> {
    let tag = signature_tag(digest);
    let sig_ref = reference.with_tag(&tag);
    match client
        .pull(&sig_ref, auth, vec![SIGNATURE_MEDIA_TYPE])
        .await
    {
        Ok(image) => {
            let layer = image
                .layers
                .first()
                .with_context(|| format!("{reference}: the signature artifact `{tag}` is empty"))?;
            Ok(Some(String::from_utf8(layer.data.to_vec()).with_context(
                || format!("{reference}: the signature artifact `{tag}` is not text"),
            )?))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(registry_error(reference, "fetch the signature of", e)),
    }
}

/// The tag a component's signature is published under.
pub fn signature_tag(digest: &str) -> String {
    format!("sha256-{}.minisig", digest.trim_start_matches("sha256:"))
}

/// Pushes a component (and its signature) in the Wasm OCI layout; returns the manifest digest.
pub async fn push(
    reference: &OciRef,
    bytes: Vec<u8>,
    info: ComponentInfo,
    annotations: BTreeMap<String, String>,
    signature: Option<&str>,
) -> anyhow::Result<String> {
    let auth = credentials(reference.registry())?;
    let client = client(reference.registry());
    let digest = phasegate_model::digest::sha256_bytes(&bytes);
    let config = WasmConfig {
        created: super::lock::now_rfc3339(),
        author: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![digest.clone()],
        component: Some(info),
    };
    let config = Config {
        data: serde_json::to_vec(&config)?.into(),
        media_type: CONFIG_MEDIA_TYPE.into(),
        annotations: None,
    };
    let layers = vec![ImageLayer::new(bytes, WASM_LAYER_MEDIA_TYPE.into(), None)];
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.media_type = Some(MANIFEST_MEDIA_TYPE.into());
    client
        .push(&reference.0, &layers, config, &auth, Some(manifest))
        .await
        .map_err(|e| registry_error(reference, "push to", e))?;
    if let Some(sig) = signature {
        let sig_ref = reference.with_tag(&signature_tag(&digest));
        let layers = vec![ImageLayer::new(
            sig.as_bytes().to_vec(),
            SIGNATURE_MEDIA_TYPE.into(),
            None,
        )];
        let config = Config {
            data: b"{}".to_vec().into(),
            media_type: EMPTY_MEDIA_TYPE.into(),
            annotations: None,
        };
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(MANIFEST_MEDIA_TYPE.into());
        manifest.artifact_type = Some(SIGNATURE_MEDIA_TYPE.into());
        client
            .push(&sig_ref, &layers, config, &auth, Some(manifest))
            .await
            .map_err(|e| registry_error(reference, "push the signature to", e))?;
    }
    // The digest of the manifest exactly as the registry stores it.
    client
        .fetch_manifest_digest(&reference.0, &auth)
        .await
        .map_err(|e| registry_error(reference, "read back the manifest of", e))
}

fn is_not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown)),
        _ => false,
    }
}

fn registry_error(
    reference: &OciRef,
    action: &str,
    e: oci_client::errors::OciDistributionError,
) -> anyhow::Error {
    use oci_client::errors::OciDistributionError as E;
    let help = match &e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            "log in (`docker login`, which writes ~/.docker/config.json) or set PHASEGATE_REGISTRY_USERNAME and PHASEGATE_REGISTRY_PASSWORD"
        }
        E::RequestError(_) => {
            "check that the registry is up and reachable from here (host, port, network, TLS)"
        }
        _ if is_not_found(&e) => {
            "check the repository and tag (`plugin inspect` shows what a reference holds)"
        }
        _ => "check the reference and the registry",
    };
    let text = super::chain(&e);
    Problem::new(format!("cannot {action} {reference}: {text}"))
        .help(help)
        .into()
}

/// Credentials for a registry (see the module docs for the order).
fn credentials(registry: &str) -> anyhow::Result<RegistryAuth> {
    if let (Ok(user), Ok(pass)) = (
        std::env::var("PHASEGATE_REGISTRY_USERNAME"),
        std::env::var("PHASEGATE_REGISTRY_PASSWORD"),
    ) {
        return Ok(RegistryAuth::Basic(user, pass));
    }
    let Some(path) = docker_config_path() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(RegistryAuth::Anonymous),
    };
    let config: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid Docker config", path.display()))?;
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| server_matches(k, registry))
        .map(|(_, v)| v.clone())
        .or(config.creds_store.clone());
    if let Some(helper) = helper {
        return credential_helper(&helper, registry);
    }
    for (server, entry) in &config.auths {
        if !server_matches(server, registry) {
            continue;
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .with_context(|| {
                    format!(
                        "{}: the `auth` of `{server}` is not base64 `user:password`",
                        path.display()
                    )
                })?;
            let (u, p) = decoded.split_once(':').with_context(|| {
                format!(
                    "{}: the `auth` of `{server}` is not `user:password`",
                    path.display()
                )
            })?;
            return Ok(RegistryAuth::Basic(u.to_owned(), p.to_owned()));
        }
    }
    Ok(RegistryAuth::Anonymous)
}

fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")))
}

fn server_matches(server: &str, registry: &str) -> bool {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    s == registry || (registry == "docker.io" && s == "index.docker.io")
}

fn credential_helper(helper: &str, registry: &str) -> anyhow::Result<RegistryAuth> {
    use std::io::Write as _;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "the Docker config names the credential helper `{program}`, which cannot be run"
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(registry.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Ok(RegistryAuth::Anonymous);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperOutput {
        username: String,
        secret: String,
    }
    let creds: HelperOutput = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{program} get` did not print credentials"))?;
    Ok(if creds.username == "<token>" {
        RegistryAuth::Bearer(creds.secret)
    } else {
        RegistryAuth::Basic(creds.username, creds.secret)
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The imports and exports of a component, for the config blob.
pub fn component_info(bytes: &[u8], world: &str) -> ComponentInfo {
    match wit_component::decode(bytes) {
        Ok(wit_component::DecodedWasm::Component(resolve, id)) => {
            let w = &resolve.worlds[id];
            ComponentInfo {
                exports: w
                    .exports
                    .keys()
                    .map(|k| resolve.name_world_key(k))
                    .collect(),
                imports: w
                    .imports
                    .keys()
                    .map(|k| resolve.name_world_key(k))
                    .collect(),
                target: Some(world.to_owned()),
            }
        }
        _ => ComponentInfo {
            exports: vec![],
            imports: vec![],
            target: Some(world.to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = OciRef::parse("oci://127.0.0.1:5000/acme/tool:1.0").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert!(is_loopback(r.registry()));
        assert!(!is_loopback("ghcr.io"));
        assert!(OciRef::parse("127.0.0.1:5000/acme/tool:1.0").is_err());
        assert!(OciRef::parse("oci://tool").is_err());
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.minisig".to_owned());
    }
}

//! The pod's volumes as folders under the pod's directory, written as the kubelet
//! writes them: Secret and ConfigMap keys as files (items, modes), projected
//! ServiceAccount tokens from the TokenRequest API (audience, expiry, bound to the
//! pod), downward API fields, and empty dirs.
//!
//! Tokens are requested once, when the pod starts, and not rotated: a test pod
//! lives for minutes, a token for an hour. Secret and ConfigMap volumes are synced
//! again while the pod runs ([`refresh`]), as the kubelet does, so an optional
//! Secret created after the pod started (weft-control's bootstrap) shows up.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;

/// Volume files' mode when the pod does not say (the API's default).
const DEFAULT_MODE: i32 = 0o644;

/// Writes every volume of `pod` under `dir/<volume name>`; returns the folders.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let spec = pod.spec.as_ref().context("the pod has no spec")?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let path = dir.join(&v.name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let files = files(client, pod, ns, v)
            .await
            .with_context(|| format!("volume {}", v.name))?;
        let writer = Writer {
            dir: &path,
            gid: fs_group,
        };
        match files {
            Contents::EmptyDir => {
                // The kubelet's emptyDir is world-writable.
                set_mode(&path, 0o777)?;
            }
            Contents::Files(files) => {
                set_mode(&path, 0o755)?;
                for (name, data, mode) in files {
                    writer.write(&name, &data, mode)?;
                }
            }
        }
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Writes the Secret and ConfigMap volumes of a running `pod` again where their
/// objects changed (or appeared, for optional ones).
pub async fn refresh(client: &kube::Client, pod: &Pod, dir: &Path) -> anyhow::Result<()> {
    let spec = pod.spec.as_ref().context("the pod has no spec")?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let gid = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for v in spec.volumes.iter().flatten() {
        if v.secret.is_none() && v.config_map.is_none() {
            continue;
        }
        let Contents::Files(files) = files(client, pod, ns, v).await? else {
            continue;
        };
        let path = dir.join(&v.name);
        let writer = Writer { dir: &path, gid };
        for (name, data, mode) in files {
            if std::fs::read(path.join(&name)).ok().as_deref() != Some(&data[..]) {
                writer.write(&name, &data, mode)?;
            }
        }
    }
    Ok(())
}

enum Contents {
    EmptyDir,
    Files(Vec<(String, Vec<u8>, i32)>),
}

async fn files(client: &kube::Client, pod: &Pod, ns: &str, v: &Volume) -> anyhow::Result<Contents> {
    if v.empty_dir.is_some() {
        return Ok(Contents::EmptyDir);
    }
    if let Some(s) = &v.secret {
        let name = s
            .secret_name
            .clone()
            .context("secret volume without secretName")?;
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        let data = secret(client, ns, &name, s.optional == Some(true)).await?;
        return Ok(Contents::Files(pick(
            &data,
            s.items.as_deref(),
            mode,
            &name,
        )?));
    }
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(DEFAULT_MODE);
        let data = config_map(client, ns, &c.name, c.optional == Some(true)).await?;
        return Ok(Contents::Files(pick(
            &data,
            c.items.as_deref(),
            mode,
            &c.name,
        )?));
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        let items = d.items.iter().flatten();
        return Ok(Contents::Files(downward(pod, items, mode)?));
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let mut all = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let token = token(
                    client,
                    pod,
                    ns,
                    t.audience.clone(),
                    t.expiration_seconds.unwrap_or(3600),
                )
                .await?;
                all.push((t.path.clone(), token.into_bytes(), mode));
            } else if let Some(c) = &source.config_map {
                let data = config_map(client, ns, &c.name, c.optional == Some(true)).await?;
                all.extend(pick(&data, c.items.as_deref(), mode, &c.name)?);
            } else if let Some(s) = &source.secret {
                let data = secret(client, ns, &s.name, s.optional == Some(true)).await?;
                all.extend(pick(&data, s.items.as_deref(), mode, &s.name)?);
            } else if let Some(d) = &source.downward_api {
                all.extend(downward(pod, d.items.iter().flatten(), mode)?);
            } else {
                bail!("a projected source this test node does not support");
            }
        }
        return Ok(Contents::Files(all));
    }
    bail!("volume type not supported by the test node agent")
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(s) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, v))
            .collect()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("secret {ns}/{name} not found"),
    }
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(c) => Ok(c
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, ByteString(v))| (k, v)),
            )
            .collect()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("configmap {ns}/{name} not found"),
    }
}

/// The keys a volume shows: `items` if given (each must exist), else all of them.
fn pick(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    source: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>, i32)>> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let v = data
                    .get(&i.key)
                    .with_context(|| format!("{source} has no key {}", i.key))?;
                Ok((i.path.clone(), v.clone(), i.mode.unwrap_or(mode)))
            })
            .collect(),
    }
}

fn downward<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: i32,
) -> anyhow::Result<Vec<(String, Vec<u8>, i32)>> {
    items
        .map(|i| {
            let field = i
                .field_ref
                .as_ref()
                .context("only fieldRef downward API items are supported")?;
            let value = super::env::field(pod, &field.field_path, None)?;
            Ok((i.path.clone(), value.into_bytes(), i.mode.unwrap_or(mode)))
        })
        .collect()
}

/// A ServiceAccount token for `pod`'s ServiceAccount from the TokenRequest API,
/// bound to the pod (it stops being valid when the pod is deleted).
pub async fn token(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    audience: Option<String>,
    expiration_seconds: i64,
) -> anyhow::Result<String> {
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let answer: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for serviceaccount {ns}/{sa}"))?;
    let token = answer.status.map(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        bail!("TokenRequest for serviceaccount {ns}/{sa} returned no token");
    }
    Ok(token)
}

struct Writer<'a> {
    dir: &'a Path,
    gid: Option<u32>,
}

impl Writer<'_> {
    fn write(&self, name: &str, data: &[u8], mode: i32) -> anyhow::Result<()> {
        if name.split('/').any(|part| part == "..") || name.starts_with('/') {
            bail!("volume path {name:?} leaves its volume");
        }
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Written aside and renamed into place: a container reading the file while a
        // refresh replaces it sees the old content or the new, never half of one.
        let fresh = path.with_extension("weft-new");
        std::fs::write(&fresh, data)
            .with_context(|| format!("cannot write {}", fresh.display()))?;
        // With an fsGroup the kubelet makes files group-owned and group-readable.
        let mut mode = u32::try_from(mode).unwrap_or(0o644) & 0o777;
        if let Some(gid) = self.gid {
            nix::unistd::chown(&fresh, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("cannot chown {}", path.display()))?;
            mode |= 0o040;
        }
        set_mode(&fresh, mode)?;
        std::fs::rename(&fresh, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

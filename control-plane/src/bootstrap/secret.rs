//! Create-if-absent for Secrets, safe when several replicas race.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;

/// `NAMESPACE/NAME` of a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for SecretRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(SecretRef {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether [`get_or_create`] found the Secret or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It existed (provided, created earlier, or by a replica that won the race).
    Found,
    Created,
}

/// The Secret `at`, created from `make()` when it does not exist. When another
/// replica creates it between our read and our create, its Secret is returned:
/// whoever is first wins, everyone uses the winner's.
pub async fn get_or_create(
    client: &kube::Client,
    at: &SecretRef,
    make: impl FnOnce() -> anyhow::Result<Secret>,
) -> anyhow::Result<(Secret, Origin)> {
    if let Some(found) = get(client, at).await? {
        return Ok((found, Origin::Found));
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    let mut secret = make()?;
    secret.metadata.name = Some(at.name.clone());
    secret.metadata.namespace = Some(at.namespace.clone());
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => Ok((created, Origin::Created)),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            tracing::info!(secret = %at, "another replica created it first; using theirs");
            let winner = api
                .get(&at.name)
                .await
                .map_err(|e| api_error(&e, "get", at))?;
            Ok((winner, Origin::Found))
        }
        Err(e) => Err(api_error(&e, "create", at)),
    }
}

/// The Secret `at`, or None when it does not exist.
pub async fn get(client: &kube::Client, at: &SecretRef) -> anyhow::Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    api.get_opt(&at.name)
        .await
        .map_err(|e| api_error(&e, "get", at))
}

/// The value of `key`, if the Secret has it.
pub fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|v| v.0.as_slice())
}

/// The value of `key` as text; an error names the key when it is missing or not UTF-8.
pub fn text<'a>(secret: &'a Secret, key: &str) -> anyhow::Result<&'a str> {
    let bytes = value(secret, key).ok_or_else(|| anyhow::anyhow!("no key {key:?}"))?;
    std::str::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{key:?} is not UTF-8 text"))
}

/// Secret data from (key, text) pairs.
pub fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// Whether the control plane generated this Secret (see [`super::GENERATED_BY`]).
pub fn generated(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(super::GENERATED_BY))
        .is_some_and(|v| v == super::GENERATED_BY_VALUE)
}

fn api_error(e: &kube::Error, verb: &str, at: &SecretRef) -> anyhow::Error {
    match e {
        kube::Error::Api(status) if status.is_forbidden() => anyhow::anyhow!(
            "{verb} Secret {at} is forbidden ({}); the control plane's ServiceAccount \
             needs `{verb}` on it (deploy/k8s/rbac.yaml)",
            status.message
        ),
        kube::Error::Api(status) => anyhow::anyhow!(
            "{verb} Secret {at}: the API server answered {} {}: {}",
            status.code,
            status.reason,
            status.message
        ),
        other => anyhow::anyhow!("{verb} Secret {at}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_ref_is_namespace_slash_name() {
        let r: SecretRef = "weft-system/weft-identity-ca".parse().expect("ref");
        assert_eq!(r.namespace, "weft-system");
        assert_eq!(r.name, "weft-identity-ca");
        assert_eq!(r.to_string(), "weft-system/weft-identity-ca");
        for bad in ["weft-identity-ca", "/x", "x/", "a/b/c", ""] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad:?}");
        }
    }
}

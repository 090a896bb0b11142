//! A stand-in Kubernetes API server that answers TokenReviews over HTTPS on
//! 127.0.0.1, the way kube-apiserver does: `POST
//! /apis/authentication.k8s.io/v1/tokenreviews` with the caller's bearer token,
//! answered `201 Created` with the review (spec echoed, status filled in), or a
//! `Status` object for errors. It knows a few ServiceAccount tokens, each bound to
//! audiences, and records every request it gets.
//!
//! Its serving certificate comes from its own CA; [`ApiServer::write_kubeconfig`]
//! writes a kubeconfig that trusts that CA and presents [`CALLER_TOKEN`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::apps::AbortOnDrop;

/// The bearer token the control plane presents (its own ServiceAccount's, in a
/// cluster). Requests without it get 401.
pub const CALLER_TOKEN: &str = "weft-control-credential";
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The audience a token has when none is asked for: the API server's own.
const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As kube-apiserver does.
    Answer,
    /// Authenticates known tokens whatever audience is asked for, and reports the
    /// token's own audiences: an authenticator that ignores `spec.audiences`.
    AudienceUnaware,
    /// Accepts the request and never answers.
    Hang,
    /// 403: the caller may not create TokenReviews (missing RBAC).
    Forbidden,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct Account {
    username: String,
    audiences: Vec<String>,
}

struct State {
    mode: Mode,
    tokens: BTreeMap<String, Account>,
    received: Vec<Received>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    /// The CA (PEM) that signed the serving certificate.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    _task: AbortOnDrop,
}

impl ApiServer {
    pub async fn start() -> anyhow::Result<ApiServer> {
        let (ca_pem, acceptor) = tls()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Answer,
            tokens: BTreeMap::new(),
            received: Vec::new(),
        }));
        let served = state.clone();
        let task = serve_https(listener, acceptor, move |req| {
            let state = served.clone();
            async move { answer(&state, req).await }
        });
        Ok(ApiServer {
            addr,
            ca_pem,
            state,
            _task: task,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    /// Makes `token` a valid token of ServiceAccount `namespace/name`, bound to
    /// `audiences`.
    pub fn add_service_account_token(
        &self,
        token: &str,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) {
        self.state().tokens.insert(
            token.to_string(),
            Account {
                username: format!("system:serviceaccount:{namespace}:{name}"),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
            },
        );
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// Writes the CA and a kubeconfig for this server into `dir`; returns the
    /// kubeconfig's path.
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        kubeconfig(dir, &format!("https://{}", self.addr), &self.ca_pem)
    }
}

/// Serves HTTP/1.1 and HTTP/2 over TLS on `listener`, each request answered by
/// `handler`, until the returned guard is dropped.
pub fn serve_https<F, Fut>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: F,
) -> AbortOnDrop
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            connections.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    }))
}

/// A kubeconfig for `server`, trusting `ca_pem`, presenting [`CALLER_TOKEN`].
pub fn kubeconfig(dir: &Path, server: &str, ca_pem: &str) -> anyhow::Result<PathBuf> {
    let ca_path = dir.join("apiserver-ca.pem");
    std::fs::write(&ca_path, ca_pem).context("writing the API server's CA")?;
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: weft-control\n  \
         user:\n    token: {CALLER_TOKEN}\ncontexts:\n- name: stand-in\n  context:\n    \
         cluster: stand-in\n    user: weft-control\ncurrent-context: stand-in\n",
        ca = ca_path.display()
    );
    std::fs::write(&path, text).context("writing the kubeconfig")?;
    Ok(path)
}

fn tls() -> anyhow::Result<(String, tokio_rustls::TlsAcceptor)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "stand-in kubernetes CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    let cert = params.signed_by(&key, &issuer)?;
    Ok((
        ca_cert.pem(),
        tls_acceptor(&cert, &key, &[b"h2", b"http/1.1"])?,
    ))
}

/// A TLS server (no client certificates) presenting `cert` and offering `alpn`.
pub fn tls_acceptor(
    cert: &rcgen::Certificate,
    key: &KeyPair,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` object, as the API server sends with an error.
fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (authorization, content_type) = (
        header(http::header::AUTHORIZATION),
        header(http::header::CONTENT_TYPE),
    );
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let body = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let mode = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.received.push(Received {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            content_type,
            body: body.clone(),
        });
        s.mode
    };
    if mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    if authorization.as_deref() != Some(&format!("Bearer {CALLER_TOKEN}")) {
        return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if method != "POST" || path != TOKEN_REVIEW_PATH {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if mode == Mode::Forbidden {
        return failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "tokenreviews.authentication.k8s.io is forbidden: User \
             \"system:serviceaccount:weft-system:weft-control\" cannot create resource \
             \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
        );
    }
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let token = spec
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut wanted: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if wanted.is_empty() {
        wanted.push(API_SERVER_AUDIENCE.to_string());
    }
    let account = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tokens
        .get(token)
        .cloned();
    let status = match account {
        None => json!({
            "user": {},
            "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive, token lookup failed]",
        }),
        Some(account) => {
            let common: Vec<&String> = account
                .audiences
                .iter()
                .filter(|a| wanted.contains(a))
                .collect();
            if mode == Mode::AudienceUnaware {
                authenticated(&account, account.audiences.iter().collect())
            } else if common.is_empty() {
                json!({
                    "user": {},
                    "error": format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                        account.audiences, wanted
                    ),
                })
            } else {
                authenticated(&account, common)
            }
        }
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    )
}

fn authenticated(account: &Account, audiences: Vec<&String>) -> Value {
    let namespace = account
        .username
        .split(':')
        .nth(2)
        .unwrap_or_default()
        .to_string();
    json!({
        "authenticated": true,
        "user": {
            "username": account.username,
            "uid": "4b6a3c52-0f0e-4a53-9d6e-5b8f3c1d2e7a",
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["JTI=8e0c7d1a-3f5b-4f0e-9a51-2c6d7e8f9a0b"],
                "authentication.kubernetes.io/node-name": ["kind-worker"],
                "authentication.kubernetes.io/pod-name": ["orders-7d9c6b5f4-x2kqz"],
                "authentication.kubernetes.io/pod-uid": ["0d3c1b2a-6e5f-4a7b-8c9d-1e2f3a4b5c6d"],
            },
        },
        "audiences": audiences,
    })
}

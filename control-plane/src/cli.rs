//! The `weft-control` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;
use std::time::Duration;

use crate::bootstrap::SecretRef;
use crate::bootstrap::injector::InjectorBootstrap;
use crate::identity::ca::CertificateAuthority;
use crate::identity::proof::{IdentityProof, LocalTokens, Workload};
use crate::identity::token_review::TokenReviewer;
use crate::server::{IdentityConfig, Server, ServerConfig};
use crate::source::file::FileSource;
use crate::source::kubernetes::KubernetesSource;

#[derive(Debug, Parser)]
#[command(name = "weft-control", version, about = "Weft's control plane")]
pub struct Cli {
    /// Log lines as `plain` text (coloured only on a terminal) or `json`, one object
    /// per line.
    #[arg(long, global = true, env = "WEFT_LOG_FORMAT", default_value_t)]
    pub log_format: weft_api::logs::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve discovery to the proxies from a mesh description.
    Serve(Box<ServeArgs>),
    /// Run a whole local mesh: this control plane on the embedded checkout example,
    /// every example service behind its own weft-proxy, traffic and a live summary.
    Demo(crate::demo::DemoOptions),
    /// Print the local identity token for one workload (what its proxy sends to
    /// Identity.Certify as proof). Uses the secret in the state directory.
    Token(TokenArgs),
    /// Print the CustomResourceDefinitions of Weft's policy resources (multi-document
    /// YAML), or write one file per CRD into --out-dir.
    Crds(CrdsArgs),
}

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write <plural>.weft.io.yaml files here (deploy/k8s/crds) instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Where the served mesh comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A watched YAML file or directory (--mesh).
    File,
    /// The Kubernetes API (in-cluster config or KUBECONFIG).
    Kubernetes,
}

#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// Where the development CA and the token secret live (created on first start).
    #[arg(long, value_name = "DIR", env = "WEFT_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: PathBuf,
    /// The issuing CA certificate (PEM), optionally followed by the intermediates
    /// above it. Without it, a development CA is generated in the state directory.
    #[arg(long, value_name = "FILE", env = "WEFT_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The issuing CA's private key (PEM, PKCS#8).
    #[arg(long, value_name = "FILE", env = "WEFT_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Read the issuing CA from this Kubernetes Secret (`NAMESPACE/NAME`; `tls.crt`,
    /// `tls.key` in PKCS#8, `ca.crt` the root, as cert-manager writes them) through
    /// the API. When it does not exist, a development CA is generated and stored in
    /// it, and every replica uses that one.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        env = "WEFT_CA_SECRET",
        conflicts_with = "ca_cert"
    )]
    pub ca_secret: Option<SecretRef>,
    /// With --ca-secret, whether a missing Secret gets a development CA. `false`
    /// makes it an error instead, so a CA that cert-manager has yet to issue is
    /// never raced by a development one.
    #[arg(
        long,
        value_name = "BOOL",
        env = "WEFT_GENERATE_DEV_CA",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub generate_dev_ca: bool,
    /// The root certificate (PEM) when --ca-cert is an intermediate below it (e.g.
    /// `ca.crt` of a cert-manager Secret): proxies trust this root, and the
    /// intermediates go out with every certificate.
    #[arg(long, value_name = "FILE", env = "WEFT_CA_ROOT", requires = "ca_cert")]
    pub ca_root: Option<PathBuf>,
    /// The SPIFFE trust domain of every workload identity.
    #[arg(
        long,
        value_name = "NAME",
        env = "WEFT_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub trust_domain: String,
    /// More roots (PEM) proxies trust beside the CA's own: the next root while
    /// rotating the root.
    #[arg(long, value_name = "FILE", env = "WEFT_EXTRA_ROOTS")]
    pub extra_roots: Option<PathBuf>,
    /// Lifetime of workload certificates, e.g. 24h, 1h, 10s.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
    #[command(flatten)]
    pub proof: ProofArgs,
}

/// What a proxy must show to get a certificate.
#[derive(Debug, clap::Args)]
pub struct ProofArgs {
    /// `local`: the HMAC tokens `weft-control token` prints. `kubernetes`: the pod's
    /// projected ServiceAccount token, checked with the TokenReview API of the API
    /// server found like kubectl does ($KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(
        long = "identity-proof",
        value_enum,
        value_name = "KIND",
        env = "WEFT_IDENTITY_PROOF",
        default_value = "local"
    )]
    pub kind: ProofKind,
    /// The audience the proxies' projected tokens are bound to (kubernetes proof).
    #[arg(
        long,
        value_name = "NAME",
        env = "WEFT_TOKEN_AUDIENCE",
        default_value = crate::identity::token_review::DEFAULT_AUDIENCE
    )]
    pub token_audience: String,
    /// How long one TokenReview may take before the proxy is told to retry.
    #[arg(
        long,
        value_name = "DURATION",
        env = "WEFT_TOKEN_REVIEW_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub token_review_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProofKind {
    Local,
    Kubernetes,
}

impl ProofArgs {
    async fn build(&self, state_dir: &std::path::Path) -> anyhow::Result<Arc<dyn IdentityProof>> {
        Ok(match self.kind {
            ProofKind::Local => Arc::new(LocalTokens::in_state_dir(state_dir)?),
            ProofKind::Kubernetes => {
                anyhow::ensure!(
                    !self.token_audience.trim().is_empty(),
                    "--token-audience must not be empty"
                );
                let reviewer = TokenReviewer::from_environment(
                    self.token_audience.clone(),
                    self.token_review_timeout,
                )
                .await?;
                tracing::info!(
                    audience = %self.token_audience,
                    "proofs of identity: Kubernetes ServiceAccount tokens (TokenReview)"
                );
                Arc::new(reviewer)
            }
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[arg(long, value_name = "DIR", env = "WEFT_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long)]
    pub service_account: String,
}

/// `$XDG_STATE_HOME/weft`, else `~/.local/state/weft`, else `./weft-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("weft");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/weft");
    }
    PathBuf::from("weft-state")
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = weft_api::mesh::DurationSpec::try_from(s.to_string())?.0;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

impl IdentityArgs {
    pub async fn build(&self) -> anyhow::Result<IdentityConfig> {
        let ca = match (&self.ca_secret, &self.ca_cert, &self.ca_key) {
            (Some(at), _, _) => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?;
                crate::bootstrap::identity_ca(&client, at, self.cert_lifetime, self.generate_dev_ca)
                    .await?
            }
            (None, Some(cert), Some(key)) => CertificateAuthority::from_files_with_root(
                cert,
                key,
                self.ca_root.as_deref(),
                self.cert_lifetime,
            )?,
            _ => CertificateAuthority::development(&self.state_dir, self.cert_lifetime)?,
        };
        let ca = match &self.extra_roots {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                ca.with_extra_roots(&pem)?
            }
            None => ca,
        };
        weft_api::spiffe::SpiffeId::new(&self.trust_domain, "x", "x").map_err(|_| {
            anyhow::anyhow!(
                "--trust-domain {:?} is not a valid trust domain",
                self.trust_domain
            )
        })?;
        Ok(IdentityConfig {
            ca: Arc::new(ca),
            proof: self.proof.build(&self.state_dir).await?,
            trust_domain: self.trust_domain.clone(),
        })
    }
}

/// The injector's certificate and the webhook's caBundle, made and kept by the
/// control plane (see [`crate::bootstrap::injector`]).
#[derive(Debug, clap::Args)]
pub struct InjectorArgs {
    /// The injector's serving-certificate Secret (`NAMESPACE/NAME`), created with a
    /// certificate for --injector-service when it does not exist.
    #[arg(long, value_name = "NAMESPACE/NAME", env = "WEFT_INJECTOR_SECRET")]
    pub injector_secret: Option<SecretRef>,
    /// The injector's Service in that namespace: the certificate is for
    /// <service>.<namespace>.svc.
    #[arg(
        long,
        value_name = "NAME",
        env = "WEFT_INJECTOR_SERVICE",
        default_value = "weft-injector"
    )]
    pub injector_service: String,
    /// A MutatingWebhookConfiguration whose webhooks' caBundle is kept equal to the
    /// injector Secret's `ca.crt`.
    #[arg(
        long,
        value_name = "NAME",
        env = "WEFT_INJECTOR_WEBHOOK",
        requires = "injector_secret"
    )]
    pub injector_webhook: Option<String>,
    /// How often the Secret and the caBundle are checked again, e.g. 30s.
    #[arg(
        long,
        value_name = "DURATION",
        env = "WEFT_INJECTOR_RECHECK",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub injector_recheck: Duration,
}

impl InjectorArgs {
    fn bootstrap(&self) -> Option<InjectorBootstrap> {
        Some(InjectorBootstrap {
            secret: self.injector_secret.clone()?,
            service: self.injector_service.clone(),
            webhook: self.injector_webhook.clone(),
            recheck: self.injector_recheck,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A mesh YAML file, or a directory whose *.yaml and *.yml files are merged.
    /// Watched: valid changes are served at once, invalid ones are rejected.
    /// Required with --source file.
    #[arg(long, value_name = "PATH")]
    pub mesh: Option<PathBuf>,
    /// Where the mesh comes from: a file, or the Kubernetes API (Services,
    /// EndpointSlices, Pods and weft.io policies).
    #[arg(long, value_enum, env = "WEFT_SOURCE", default_value = "file")]
    pub source: SourceKind,
    /// Address for the gRPC API (weft.v1.Discovery).
    #[arg(
        long,
        value_name = "ADDR",
        env = "WEFT_GRPC_LISTEN",
        default_value = "127.0.0.1:7443"
    )]
    pub grpc: SocketAddr,
    /// Address for /metrics, /live and /ready.
    #[arg(
        long,
        value_name = "ADDR",
        env = "WEFT_ADMIN_LISTEN",
        default_value = "127.0.0.1:7990"
    )]
    pub admin: SocketAddr,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub injector: InjectorArgs,
    /// Serve the gRPC API over TLS, with a certificate from the mesh CA (DNS names
    /// --tls-name, IP 127.0.0.1, ::1 and the --grpc address). Proxies then use
    /// `https://` and trust the CA's root (<state-dir>/ca.pem for the development
    /// CA) through `identity.trust_bundle` or WEFT_TRUST_BUNDLE. The environment
    /// variable takes true/false.
    #[arg(long, env = "WEFT_GRPC_TLS")]
    pub grpc_tls: bool,
    /// A DNS name in the control plane's serving certificate: the name proxies dial,
    /// e.g. weft-control.weft-system.svc in a cluster. Repeat the flag, or give a
    /// comma-separated list in the environment variable, for several names.
    #[arg(
        long,
        value_name = "NAME",
        env = "WEFT_TLS_NAME",
        value_delimiter = ',',
        default_value = "weft-control"
    )]
    pub tls_name: Vec<String>,
    /// The other control-plane replicas' admin addresses (HOST:PORT), for a live
    /// view of the whole mesh: each proxy reports to one replica. A name resolving
    /// to several addresses (a headless Service) is every one of them; this
    /// replica's own address among them is recognised and skipped. Repeat the
    /// flag, or give a comma-separated list in the environment variable.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "WEFT_LIVE_PEERS",
        value_delimiter = ','
    )]
    pub live_peers: Vec<String>,
}

/// Parses the command line, runs it and maps the outcome to the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls refuses to pick a provider when several could be compiled in; Weft uses
    // ring only.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // WEFT_LOG (what the manifests set), else RUST_LOG, else info.
    weft_api::logs::init(
        tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        cli.log_format,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-control: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Demo(opts) => runtime.block_on(crate::demo::run(opts)),
        Command::Token(args) => token(&args),
        Command::Crds(args) => crds(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("weft-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Chosen before anything is bound or created, so a wrong choice fails at once.
    let source = match (args.source, &args.mesh) {
        (SourceKind::File, None) => anyhow::bail!("--source file needs --mesh"),
        (SourceKind::File, Some(mesh)) => ChosenSource::File(mesh.clone()),
        (SourceKind::Kubernetes, _) => ChosenSource::Kubernetes(
            kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?,
        ),
    };
    let config = ServerConfig {
        grpc: args.grpc,
        admin: args.admin,
    };
    let identity = args.identity.build().await?;
    // Beside serving, for the life of the process; the API client is cheap to clone.
    let _injector_bootstrap = match args.injector.bootstrap() {
        Some(bootstrap) => {
            let client = match &source {
                ChosenSource::Kubernetes(client) => client.clone(),
                ChosenSource::File(_) => kube::Client::try_default()
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?,
            };
            Some(AbortOnDrop(tokio::spawn(bootstrap.run(client))))
        }
        None => None,
    };
    let mut server = Server::bind(&config)
        .await?
        .with_live_peers(args.live_peers.clone());
    if args.grpc_tls {
        let mut ips = vec![
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        if !args.grpc.ip().is_unspecified() && !ips.contains(&args.grpc.ip()) {
            ips.push(args.grpc.ip());
        }
        // Re-issued at every start; a year covers any realistic uptime.
        let (chain, key) =
            identity
                .ca
                .issue_server(&args.tls_name, &ips, Duration::from_secs(365 * 24 * 3600))?;
        server = server.with_tls(crate::server::tls_config(&chain, key)?);
        tracing::info!(names = ?args.tls_name, "gRPC over TLS");
    }
    let trust_domain = identity.trust_domain.clone();
    let server = server.with_identity(identity);
    match source {
        ChosenSource::Kubernetes(client) => {
            tracing::info!(%trust_domain, "source: kubernetes API");
            let source = KubernetesSource::new(client, trust_domain);
            server.run(source, shutdown_signal()).await
        }
        ChosenSource::File(mesh) => {
            tracing::info!(path = %mesh.display(), "source: file");
            server.run(FileSource::new(mesh), shutdown_signal()).await
        }
    }
}

/// Stops a background task when the serving ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum ChosenSource {
    File(PathBuf),
    Kubernetes(kube::Client),
}

fn crds(args: &CrdsArgs) -> anyhow::Result<()> {
    use crate::source::kubernetes::crd;
    let mut documents = Vec::new();
    for (file, definition) in crd::definitions() {
        let text = crd::to_yaml(&definition)?;
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => documents.push(text),
        }
    }
    if !documents.is_empty() {
        print!("{}", documents.join("---\n"));
    }
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let id = weft_api::spiffe::SpiffeId::new("x", &args.namespace, &args.service_account)
        .map_err(|_| anyhow::anyhow!("invalid namespace or service account"))?;
    let tokens = LocalTokens::in_state_dir(&args.state_dir)?;
    println!(
        "{}",
        tokens.token(&Workload {
            namespace: id.namespace,
            service_account: id.service_account,
        })
    );
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. If the handlers cannot be installed the process
/// still runs, and the default signal action stops it.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot install signal handlers");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

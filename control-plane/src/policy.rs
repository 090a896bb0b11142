//! `weft.v1.Policy`: who may call a workload. Each proxy watches its own workload
//! (namespace + service account); a new policy is sent whenever the mesh changes it.
//! A workload the mesh names no policy for gets an empty policy, which tells the
//! proxy to keep the inbound policy of its own config.

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_api::mesh::{DEFAULT_NAMESPACE, MeshSpec};
use weft_api::v1;
use weft_api::v1::policy_server::{Policy, PolicyServer};

use crate::source::SourceState;

pub struct PolicyService {
    states: watch::Receiver<Option<SourceState>>,
    stop: watch::Receiver<bool>,
    trust_bundle: Option<v1::TrustBundle>,
}

impl PolicyService {
    pub fn new(
        states: watch::Receiver<Option<SourceState>>,
        stop: watch::Receiver<bool>,
        trust_bundle: Option<v1::TrustBundle>,
    ) -> PolicyServer<PolicyService> {
        PolicyServer::new(PolicyService {
            states,
            stop,
            trust_bundle,
        })
    }
}

fn policy_for(mesh: &MeshSpec, namespace: &str, account: &str, version: u64) -> v1::InboundPolicy {
    let mut policy = mesh
        .workloads
        .iter()
        .find(|w| w.namespace.as_str() == namespace && w.service_account.as_str() == account)
        .map_or(
            v1::InboundPolicy {
                version,
                ports: Vec::new(),
                trust_bundle: None,
                app_ports: Vec::new(),
            },
            |w| w.to_policy(version),
        );
    policy.app_ports = mesh.app_ports(namespace, account);
    policy
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchInboundStream = ReceiverStream<Result<v1::InboundPolicy, Status>>;

    async fn watch_inbound(
        &self,
        request: Request<v1::InboundRequest>,
    ) -> Result<Response<Self::WatchInboundStream>, Status> {
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("InboundRequest.node is required"))?;
        let namespace = or_default(&node.namespace, DEFAULT_NAMESPACE).to_string();
        let account = or_default(&node.service_account, "default").to_string();
        let (tx, rx) = mpsc::channel(4);
        let mut states = self.states.clone();
        let mut stop = self.stop.clone();
        let trust_bundle = self.trust_bundle.clone();
        tokio::spawn(async move {
            let mut sent: Option<(Vec<v1::PortPolicy>, Vec<v1::AppPort>)> = None;
            loop {
                let policy = states
                    .borrow_and_update()
                    .as_ref()
                    .map(|s| policy_for(&s.mesh, &namespace, &account, s.generation));
                if let Some(mut policy) = policy
                    && sent.as_ref().is_none_or(|(ports, app_ports)| {
                        *ports != policy.ports || *app_ports != policy.app_ports
                    })
                {
                    sent = Some((policy.ports.clone(), policy.app_ports.clone()));
                    policy.trust_bundle = trust_bundle.clone();
                    if tx.send(Ok(policy)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_gets_its_own_policy_or_an_empty_one() {
        let mesh = MeshSpec::from_yaml(
            "workloads:\n  - {namespace: shop, service_account: orders, inbound: [{allow_namespaces: [shop]}]}\n",
            "t.yaml",
        )
        .expect("mesh");
        let p = policy_for(&mesh, "shop", "orders", 3);
        assert_eq!(p.version, 3);
        assert_eq!(p.ports.len(), 1);
        let authz = p.ports[0].authorization.as_ref().expect("authz");
        assert_eq!(authz.allow_namespaces, vec!["shop".to_string()]);
        assert!(!authz.allow_any_meshed);
        assert!(policy_for(&mesh, "shop", "payments", 3).ports.is_empty());
    }

    #[test]
    fn a_workload_without_a_policy_still_learns_its_app_ports() {
        let mesh = MeshSpec::from_yaml(
            "services:\n  - name: rpc\n    namespace: shop\n    ports: [{port: 80, protocol: http2}]\n    endpoints: [{address: '10.0.0.1:50051', identity: 'spiffe://td/ns/shop/sa/rpc'}]\n",
            "t.yaml",
        )
        .expect("mesh");
        let p = policy_for(&mesh, "shop", "rpc", 1);
        assert!(p.ports.is_empty(), "no policy: the config's stays");
        assert_eq!(p.app_ports.len(), 1);
        assert_eq!(p.app_ports[0].port, 50051);
        assert_eq!(p.app_ports[0].protocol(), v1::Protocol::Http2);
    }
}

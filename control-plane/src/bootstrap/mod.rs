//! First-install bootstrap in Kubernetes: the secrets `kubectl apply -k deploy/k8s`
//! cannot carry. The control plane
//! - loads the mesh's issuing CA from a Secret, and creates a development CA in it
//!   when the operator provided none ([`identity_ca`]);
//! - makes the injector's serving certificate when its Secret is absent, and keeps
//!   the webhook configuration's caBundle equal to that Secret's `ca.crt`
//!   ([`injector`]).
//!
//! Every replica does the same. Creation is create-if-absent: a replica that loses
//! the race (AlreadyExists) reads and uses the winner's object, so all agree on one
//! CA. Secrets are read through the API rather than mounted: a Secret volume that does
//! not exist yet keeps the pod from starting, and one another replica just created
//! would reach a mount only at the kubelet's next sync, while the API has it at once.

pub mod identity_ca;
pub mod injector;
pub mod secret;

pub use identity_ca::identity_ca;
pub use secret::SecretRef;

/// Label on the Secrets the control plane generated, so a restart (and an operator)
/// can tell them from provided ones.
pub const GENERATED_BY: &str = "weft.io/generated-by";
pub const GENERATED_BY_VALUE: &str = "weft-control";

//! The webhook's side: AdmissionReview v1 in, AdmissionReview v1 with a JSONPatch out.
//! The API server only calls for pods that opted in (see the MutatingWebhookConfiguration
//! in deploy/k8s), so every pod that reaches here is injected unless it opts out or
//! cannot be meshed; a skipped pod is still allowed, with a warning and an audit
//! annotation that say why.

use std::collections::BTreeMap;

use base64::Engine;
use json_patch::jsonptr::Pointer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inject::{InjectError, Injector, Outcome, SkipReason};

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

/// The fields of `AdmissionRequest` the injector reads; the rest are ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub object: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    /// Base64 of the JSON Patch document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported AdmissionReview apiVersion {0:?}; want {API_VERSION}")]
    Version(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Answers one AdmissionReview. An `Err` means the body was not a review at all
/// (the HTTP layer answers 400); every decision about the pod is an `Ok` review.
pub fn review(injector: &Injector, body: &[u8]) -> Result<AdmissionReview, ReviewError> {
    let review: AdmissionReview = serde_json::from_slice(body)?;
    if review.api_version != API_VERSION {
        return Err(ReviewError::Version(review.api_version));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    let response = respond(injector, &request);
    Ok(AdmissionReview {
        api_version: review.api_version,
        kind: review.kind,
        request: None,
        response: Some(response),
    })
}

fn respond(injector: &Injector, request: &AdmissionRequest) -> AdmissionResponse {
    let mut response = AdmissionResponse {
        uid: request.uid.clone(),
        allowed: true,
        ..Default::default()
    };
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let object = match (&request.object, is_pod, request.operation.as_str()) {
        (Some(object), true, "CREATE") => object,
        // Only pod creation is ours; anything else means the webhook's rules are
        // wider than intended, which is worth a warning rather than a denial.
        _ => {
            response.warnings.push(format!(
                "weft injector: ignored {} of {}/{}: only pod CREATE is handled",
                request.operation, request.kind.version, request.kind.kind
            ));
            return response;
        }
    };
    match injector.plan(object, Pointer::root()) {
        Ok(Outcome::Inject(patch)) => match serde_json::to_vec(&patch) {
            Ok(json) => {
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
                response.patch_type = Some("JSONPatch".into());
                response
                    .audit_annotations
                    .insert("injected".into(), "true".into());
            }
            Err(e) => deny(&mut response, 500, format!("weft injector: {e}")),
        },
        Ok(Outcome::Skip(reason)) => {
            // Opting out is a choice already visible on the pod; the other reasons
            // are surprises worth showing to whoever created it.
            if reason != SkipReason::OptedOut {
                response
                    .warnings
                    .push(format!("weft proxy not injected: {reason}"));
            }
            response
                .audit_annotations
                .insert("skipped".into(), reason.to_string());
        }
        Err(e @ InjectError::Annotation(_)) | Err(e @ InjectError::NotAPod(_)) => {
            deny(&mut response, 400, format!("weft injector: {e}"));
        }
    }
    response
}

fn deny(response: &mut AdmissionResponse, code: u16, message: String) {
    response.allowed = false;
    response.status = Some(Status { code, message });
}

//! `weftctl inject`'s side: finds the pod templates in Kubernetes manifests (one or
//! many YAML documents; Pods, workloads, CronJobs, Lists) and applies the injector's
//! patch to each. Output keys are sorted, as `kubectl get -o yaml` prints them.

use std::fmt;

use json_patch::jsonptr::{Pointer, PointerBuf};
use serde::Deserialize;
use serde_json::Value;

use crate::inject::{InjectError, Injector, Outcome, SkipReason};

/// What happened to one workload, for the message on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// `deployment/web`, with `items[2]` paths for List members.
    pub object: String,
    pub result: NoteResult,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NoteResult {
    Injected,
    Skipped(SkipReason),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            NoteResult::Injected => write!(f, "{}: injected", self.object),
            NoteResult::Skipped(reason) => write!(f, "{}: skipped: {reason}", self.object),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    // The causes are part of the message (not `source`), so a plain `{}` shows all.
    #[error("{origin}: document {index}: {error}")]
    Yaml {
        origin: String,
        index: usize,
        error: yaml_serde::Error,
    },
    #[error("{origin}: {object}: {error}")]
    Inject {
        origin: String,
        object: String,
        error: InjectError,
    },
    #[error("{origin}: {object}: the patch does not apply: {error}")]
    Patch {
        origin: String,
        object: String,
        error: json_patch::PatchError,
    },
    #[error("{origin}: document {index} cannot be written as YAML: {error}")]
    Write {
        origin: String,
        index: usize,
        error: yaml_serde::Error,
    },
}

/// Injects every workload in `text` (`origin` names it in errors) and returns the
/// manifests as YAML documents separated by `---`, plus one note per workload.
pub fn inject_manifests(
    injector: &Injector,
    text: &str,
    origin: &str,
) -> Result<(String, Vec<Note>), ManifestError> {
    let mut out = String::new();
    let mut notes = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let yaml_err = |error| ManifestError::Yaml {
            origin: origin.to_string(),
            index,
            error,
        };
        let mut doc = Value::deserialize(document).map_err(yaml_err)?;
        if doc.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        inject_object(injector, &mut doc, PointerBuf::root(), origin, &mut notes)?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(
            &yaml_serde::to_string(&doc).map_err(|error| ManifestError::Write {
                origin: origin.to_string(),
                index,
                error,
            })?,
        );
    }
    Ok((out, notes))
}

/// Where a kind keeps its pod template; `None` for kinds without one.
fn template_path(kind: &str) -> Option<&'static Pointer> {
    match kind {
        "Pod" => Some(Pointer::root()),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job"
        | "PodTemplate" => Some(Pointer::from_static("/spec/template")),
        "CronJob" => Some(Pointer::from_static("/spec/jobTemplate/spec/template")),
        _ => None,
    }
}

fn inject_object(
    injector: &Injector,
    root: &mut Value,
    at: PointerBuf,
    origin: &str,
    notes: &mut Vec<Note>,
) -> Result<(), ManifestError> {
    let Ok(object) = at.resolve(root) else {
        return Ok(());
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    // `kind: List` and typed lists (`DeploymentList`) hold their members in items.
    if kind.ends_with("List") {
        let count = object
            .get("items")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let item = at.with_trailing_token("items").with_trailing_token(i);
            inject_object(injector, root, item, origin, notes)?;
        }
        return Ok(());
    }
    // A PodTemplate object keeps its template in `template`, not `spec.template`.
    let template = match kind {
        "PodTemplate" => Pointer::from_static("/template"),
        _ => match template_path(kind) {
            Some(p) => p,
            None => return Ok(()),
        },
    };
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let mut label = format!("{}/{name}", kind.to_lowercase());
    if !at.is_root() {
        label = format!("{label} (at {at})");
    }
    let template_at = at.concat(template);
    let Ok(pod) = template_at.resolve(root) else {
        return Ok(()); // a workload without a template is the API server's to reject
    };
    let outcome = injector
        .plan(pod, &template_at)
        .map_err(|error| ManifestError::Inject {
            origin: origin.to_string(),
            object: label.clone(),
            error,
        })?;
    match outcome {
        Outcome::Inject(patch) => {
            json_patch::patch(root, &patch).map_err(|error| ManifestError::Patch {
                origin: origin.to_string(),
                object: label.clone(),
                error,
            })?;
            notes.push(Note {
                object: label,
                result: NoteResult::Injected,
            });
        }
        Outcome::Skip(reason) => notes.push(Note {
            object: label,
            result: NoteResult::Skipped(reason),
        }),
    }
    Ok(())
}

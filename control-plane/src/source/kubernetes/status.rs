//! Writes the status of Gateway API routes, as a Gateway API controller does: only
//! when it changed since Weft last wrote it, keeping other controllers' entries. A
//! failed write is tried again after the next change.

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::routes::RouteStatus;
use super::translate::ObjectKey;
use super::watch::route_resource;

pub struct StatusWriter {
    client: Client,
    /// The patch last written per route.
    written: HashMap<ObjectKey, Value>,
}

impl StatusWriter {
    pub fn new(client: Client) -> StatusWriter {
        StatusWriter {
            client,
            written: HashMap::new(),
        }
    }

    pub async fn write(&mut self, statuses: &[RouteStatus]) {
        self.written
            .retain(|key, _| statuses.iter().any(|s| &s.object == key));
        for status in statuses {
            let patch = status.patch();
            if self.written.get(&status.object) == Some(&patch) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                &status.object.namespace,
                &route_resource(status.kind),
            );
            match api
                .patch_status(
                    &status.object.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(route = %status.object, "route status written");
                    self.written.insert(status.object.clone(), patch);
                }
                Err(error) => {
                    tracing::warn!(route = %status.object, %error, "route status not written; tried again after the next change");
                }
            }
        }
    }
}

//! Outbound requests to a service with routes: `routing` picks the route and
//! applies its filters; this sends the request to the route's backend under the
//! route's timeout and retries, and counts it under the route.

use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;

use http::Response;

use super::{Outbound, Plan};
use crate::clock::since;
use crate::http::body::ProxyBody;
use crate::http::error::{ProxyError, is_grpc};
use crate::http::forward::BoxedRequest;
use crate::observe::RouteName;
use crate::routing::{self, Routed};
use crate::snapshot::Service;
use crate::snapshot::lookup::Dest;

impl Outbound {
    /// Names the route on its response for the access log and spans; only while
    /// observing, so a request pays no extensions map otherwise.
    fn name_route<B>(&self, resp: &mut Response<B>, name: &Arc<str>) {
        if self.observer.is_on() {
            resp.extensions_mut().insert(RouteName(name.clone()));
        }
    }

    pub(super) async fn handle_routed(
        &self,
        parent: Arc<Service>,
        mut req: BoxedRequest,
        client: Option<IpAddr>,
        start: u64,
    ) -> Response<ProxyBody> {
        let grpc = is_grpc(req.headers());
        let (route, backend, delay) = match routing::route(&parent, &mut req, grpc) {
            Routed::Unmatched => {
                let plan = Plan::of(&parent);
                return self.dispatch(&parent, req, client, start, &plan).await;
            }
            Routed::Answered(route, mut resp) => {
                route.metrics.record(resp.status().as_u16(), since(start));
                self.name_route(&mut *resp, &route.name);
                return *resp;
            }
            Routed::Forward {
                route,
                backend,
                delay,
            } => (route, backend, delay),
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let svc = match backend {
            None => parent.clone(),
            Some(host) => match pin!(self.lookup.service(Dest::Name(Cow::Borrowed(host)))).await {
                Some(svc) => svc,
                None => {
                    // The route names a service this proxy cannot find (yet).
                    route.metrics.proxy_error(ProxyError::NoEndpoints.reason());
                    let mut resp = ProxyError::NoEndpoints.response();
                    route.metrics.record(resp.status().as_u16(), since(start));
                    self.name_route(&mut resp, &route.name);
                    return resp;
                }
            },
        };
        let plan = Plan {
            request_timeout: route
                .timeouts
                .map_or(svc.policy.timeouts.request, |t| t.request),
            retry: match &route.retry {
                Some(retry) => retry.as_ref(),
                None => svc.policy.retry.as_ref(),
            },
            metrics: &route.metrics,
        };
        let mut resp = self.dispatch(&svc, req, client, start, &plan).await;
        if let Some(m) = &route.response_headers {
            m.apply(resp.headers_mut());
        }
        self.name_route(&mut resp, &route.name);
        resp
    }
}

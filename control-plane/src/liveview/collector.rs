//! `weft.v1.Telemetry`: each proxy streams its totals; every report is kept in the
//! live view as it arrives.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};
use weft_api::v1;
use weft_api::v1::telemetry_server::{Telemetry, TelemetryServer};

use super::LiveView;

/// Reports bigger than this are refused: a proxy reports a few hundred bytes per
/// service it talks to.
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

pub struct TelemetryService {
    live: Arc<LiveView>,
}

impl TelemetryService {
    pub fn new(live: Arc<LiveView>) -> TelemetryServer<TelemetryService> {
        TelemetryServer::new(TelemetryService { live }).max_decoding_message_size(MAX_REPORT_BYTES)
    }
}

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    async fn report(
        &self,
        request: Request<Streaming<v1::ProxyReport>>,
    ) -> Result<Response<v1::ReportAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(report) = stream.message().await? {
            if report.node.is_none() {
                return Err(Status::invalid_argument("a report names its node"));
            }
            self.live.record(Instant::now(), report);
        }
        Ok(Response::new(v1::ReportAck {}))
    }
}

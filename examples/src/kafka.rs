//! Kafka as the example services use it for events: one topic with one partition
//! (so every consumer sees the events in the order they were acknowledged), each
//! record carrying its event type and message id as headers. Producing waits for the
//! broker's acknowledgement (acks=all); consuming keeps its next offset in memory
//! (the client has no consumer groups) and starts at the earliest retained event.
//! Every connection is made again after it broke, as with the AMQP broker.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use rskafka::BackoffConfig;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::ClientBuilder;
use rskafka::client::consumer::{StartOffset, StreamConsumerBuilder};
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

/// The topic every event goes to.
pub const EVENTS_TOPIC: &str = "weft.events";
/// The record header naming the event's type (`order.placed`, `user.signed_up`).
pub const TYPE_HEADER: &str = "type";
/// The record header carrying the event's message id, for dropping duplicates.
pub const ID_HEADER: &str = "message-id";

/// How long connecting, creating the topic and finding its leader may take. A
/// connection the mesh accepted for a broker that is away may never be answered.
const SETUP_LIMIT: Duration = Duration::from_secs(5);

/// Why an event did not get to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Broker(#[from] ClientError),
    #[error("no answer from the Kafka broker within {0:?}")]
    Unreachable(Duration),
    #[error("not acknowledged within {0:?}: {1}")]
    GaveUp(Duration, Box<KafkaError>),
}

/// A client for the events topic's only partition at `addr` (host:port, the
/// bootstrap address; the broker then names the address it advertises, which
/// must reach it the same way), creating the topic when it does not exist yet.
async fn partition(addr: &str) -> Result<PartitionClient, KafkaError> {
    let setup = async {
        let backoff = BackoffConfig {
            deadline: Some(SETUP_LIMIT),
            ..Default::default()
        };
        let client = ClientBuilder::new(vec![addr.to_owned()])
            .client_id("weft-examples")
            .backoff_config(backoff)
            .build()
            .await?;
        let created = client
            .controller_client()?
            .create_topic(EVENTS_TOPIC, 1, 1, 5_000)
            .await;
        match created {
            Ok(()) => tracing::info!(topic = EVENTS_TOPIC, "topic created"),
            Err(ClientError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(client
            .partition_client(EVENTS_TOPIC, 0, UnknownTopicHandling::Retry)
            .await?)
    };
    tokio::time::timeout(SETUP_LIMIT, setup)
        .await
        .unwrap_or(Err(KafkaError::Unreachable(SETUP_LIMIT)))
}

fn now() -> DateTime<Utc> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    DateTime::from_timestamp_millis(i64::try_from(millis).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// Publishes events to the topic, each acknowledged by the broker before `publish`
/// returns; reconnects and produces again within its patience when the broker is
/// away.
pub struct KafkaPublisher {
    addr: String,
    client: tokio::sync::Mutex<Option<Arc<PartitionClient>>>,
    patience: Duration,
}

impl KafkaPublisher {
    /// `patience`: how long one `publish` keeps trying before it gives up.
    pub fn new(addr: &str, patience: Duration) -> KafkaPublisher {
        KafkaPublisher {
            addr: addr.to_owned(),
            client: tokio::sync::Mutex::new(None),
            patience,
        }
    }

    async fn client(&self) -> Result<Arc<PartitionClient>, KafkaError> {
        let mut current = self.client.lock().await;
        if let Some(client) = current.as_ref() {
            return Ok(client.clone());
        }
        let client = Arc::new(partition(&self.addr).await?);
        tracing::info!(addr = %self.addr, "connected to kafka");
        *current = Some(client.clone());
        Ok(client)
    }

    /// Publishes `payload` (JSON) as event `kind` with `message_id`.
    pub async fn publish(
        &self,
        kind: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        let record = Record {
            key: Some(message_id.as_bytes().to_vec()),
            value: Some(payload.to_vec()),
            headers: BTreeMap::from([
                (TYPE_HEADER.to_owned(), kind.as_bytes().to_vec()),
                (ID_HEADER.to_owned(), message_id.as_bytes().to_vec()),
            ]),
            timestamp: now(),
        };
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                let client = self.client().await?;
                client
                    .produce(vec![record.clone()], Compression::NoCompression)
                    .await?;
                Ok::<_, KafkaError>(())
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => KafkaError::Unreachable(self.patience),
            };
            // The next attempt starts from a new connection.
            self.client.lock().await.take();
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(KafkaError::GaveUp(self.patience, Box::new(err)));
            }
            tracing::debug!(error = %err, "produce failed; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// One event read from the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub message_id: Option<String>,
    pub data: Vec<u8>,
}

/// The event a record carries, or `None` for a record without a value.
pub fn event(record: &Record) -> Option<Event> {
    let header = |name: &str| {
        record
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(Event {
        kind: header(TYPE_HEADER).unwrap_or_default(),
        message_id: header(ID_HEADER),
        data: record.value.clone()?,
    })
}

/// Consumes the topic from its earliest event until the task is dropped, calling
/// `handle` for each event in order. A broken connection is made again with
/// backoff and consuming goes on after the last event handled.
pub async fn consume_forever<H, Fut>(addr: String, handle: H)
where
    H: Fn(Event) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut next = StartOffset::Earliest;
    let mut backoff = Duration::from_millis(100);
    loop {
        match consume_once(&addr, &mut next, &handle).await {
            Ok(()) => tracing::warn!(topic = EVENTS_TOPIC, "consumer stopped; reconnecting"),
            Err(e) => tracing::warn!(topic = EVENTS_TOPIC, error = %e, "kafka unreachable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn consume_once<H, Fut>(
    addr: &str,
    next: &mut StartOffset,
    handle: &H,
) -> Result<(), KafkaError>
where
    H: Fn(Event) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = Arc::new(partition(addr).await?);
    tracing::info!(topic = EVENTS_TOPIC, "consuming");
    let mut records = StreamConsumerBuilder::new(client, *next)
        .with_max_wait_ms(500)
        .build();
    while let Some(item) = records.next().await {
        let (record, _high_watermark) = item?;
        match event(&record.record) {
            Some(event) => handle(event).await,
            None => tracing::warn!(offset = record.offset, "record without a value skipped"),
        }
        *next = StartOffset::At(record.offset + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_its_type_and_id_in_headers() {
        let record = Record {
            key: None,
            value: Some(b"{}".to_vec()),
            headers: BTreeMap::from([
                (TYPE_HEADER.to_owned(), b"order.placed".to_vec()),
                (ID_HEADER.to_owned(), b"orders-7".to_vec()),
            ]),
            timestamp: now(),
        };
        assert_eq!(
            event(&record),
            Some(Event {
                kind: "order.placed".into(),
                message_id: Some("orders-7".into()),
                data: b"{}".to_vec(),
            })
        );
        let empty = Record {
            value: None,
            ..record
        };
        assert_eq!(event(&empty), None);
    }
}

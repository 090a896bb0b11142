//! Which broker carries the services' events (`order.placed`, `user.signed_up`):
//! RabbitMQ (AMQP, the default) or Kafka, chosen by `--events-broker` /
//! `EVENTS_BROKER`. Stock reservations (request-reply) stay on AMQP either way.

use std::time::Duration;

use crate::amqp::{AmqpError, EventPublisher};
use crate::kafka::{KafkaError, KafkaPublisher};

/// The command-line switch, shared by the services that publish or consume events.
#[derive(clap::Args, Debug, Clone)]
pub struct EventArgs {
    /// The broker that carries events: amqp (the broker of --amqp-url) or kafka
    /// (the broker at --kafka-addr).
    #[arg(long, env = "EVENTS_BROKER", value_enum, default_value_t = BrokerKind::Amqp)]
    pub events_broker: BrokerKind,
    /// The Kafka broker's bootstrap address (host:port), with --events-broker kafka.
    #[arg(long, env = "KAFKA_ADDR")]
    pub kafka_addr: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Amqp,
    Kafka,
}

/// Where events go (and come from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBroker {
    /// A RabbitMQ broker's AMQP URL.
    Amqp(String),
    /// A Kafka broker's bootstrap address.
    Kafka(String),
}

impl EventArgs {
    /// The event broker, given the service's AMQP URL if it has one; `None`: the
    /// service publishes no events to a broker.
    pub fn broker(&self, amqp_url: Option<&str>) -> anyhow::Result<Option<EventBroker>> {
        match (self.events_broker, &self.kafka_addr) {
            (BrokerKind::Kafka, Some(addr)) => Ok(Some(EventBroker::Kafka(addr.clone()))),
            (BrokerKind::Kafka, None) => {
                anyhow::bail!("--events-broker kafka needs --kafka-addr (KAFKA_ADDR)")
            }
            (BrokerKind::Amqp, Some(_)) => anyhow::bail!(
                "--kafka-addr is set but events go to AMQP: add --events-broker kafka \
                 (EVENTS_BROKER=kafka)"
            ),
            (BrokerKind::Amqp, None) => Ok(amqp_url.map(|url| EventBroker::Amqp(url.to_owned()))),
        }
    }
}

/// Why an event was not confirmed by its broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Publishes events to the chosen broker, each confirmed before `publish` returns.
pub enum EventSink {
    Amqp(Box<EventPublisher>),
    Kafka(KafkaPublisher),
}

impl EventSink {
    /// `patience`: how long one `publish` keeps trying (reconnecting) before it
    /// gives up.
    pub fn new(broker: &EventBroker, patience: Duration) -> EventSink {
        match broker {
            EventBroker::Amqp(url) => EventSink::Amqp(Box::new(EventPublisher::new(url, patience))),
            EventBroker::Kafka(addr) => EventSink::Kafka(KafkaPublisher::new(addr, patience)),
        }
    }

    /// Publishes `payload` (JSON) as event `kind` with `message_id`, so consumers
    /// can drop a redelivered duplicate.
    pub async fn publish(
        &self,
        kind: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        match self {
            EventSink::Amqp(p) => Ok(p.publish(kind, message_id, payload).await?),
            EventSink::Kafka(p) => Ok(p.publish(kind, message_id, payload).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: BrokerKind, kafka: Option<&str>) -> EventArgs {
        EventArgs {
            events_broker: kind,
            kafka_addr: kafka.map(str::to_owned),
        }
    }

    #[test]
    fn the_switch_picks_the_broker_and_refuses_half_a_choice() {
        let url = Some("amqp://b/%2f");
        assert_eq!(
            args(BrokerKind::Amqp, None).broker(url).ok().flatten(),
            Some(EventBroker::Amqp("amqp://b/%2f".into()))
        );
        assert_eq!(args(BrokerKind::Amqp, None).broker(None).ok(), Some(None));
        assert_eq!(
            args(BrokerKind::Kafka, Some("k:9092"))
                .broker(url)
                .ok()
                .flatten(),
            Some(EventBroker::Kafka("k:9092".into()))
        );
        assert!(args(BrokerKind::Kafka, None).broker(url).is_err());
        assert!(args(BrokerKind::Amqp, Some("k:9092")).broker(url).is_err());
    }
}

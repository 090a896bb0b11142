//! AMQP 0.9.1 (RabbitMQ) as the example services use it: durable events on a topic
//! exchange with publisher confirms, consumers that acknowledge after handling, and
//! request-reply over a queue (a reply queue and a correlation id). Every connection
//! is re-established when it breaks (a broker restart, a sidecar restart), so the
//! services ride out a broker outage instead of needing a restart themselves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::oneshot;

use crate::readiness::Part;

/// The topic exchange every event goes to, routed by its type.
pub const EVENTS_EXCHANGE: &str = "weft.events";
/// Routing key (and event type) of a placed order.
pub const ORDER_PLACED: &str = "order.placed";
/// Routing key (and event type) of a new user.
pub const USER_SIGNED_UP: &str = "user.signed_up";
/// The queue inventory serves stock reservations on.
pub const INVENTORY_QUEUE: &str = "inventory.reserve";
/// The queue inventory takes back the stock of orders that were not placed on.
pub const INVENTORY_RELEASE_QUEUE: &str = "inventory.release";

/// Persistent: a durable queue keeps the message across a broker restart.
const PERSISTENT: u8 = 2;

/// How long connecting and setting up a channel may take. A connect the mesh
/// accepted for a broker that is away may never be answered; without a bound, a
/// client would wait on it for good instead of trying again.
const SETUP_LIMIT: Duration = Duration::from_secs(5);

/// How long the broker's own confirm of one message may take before the
/// connection counts as broken. A live broker confirms in milliseconds.
const CONFIRM_LIMIT: Duration = Duration::from_secs(5);

/// How long acknowledging one delivery may take. lapin completes an ack once its
/// frame is handed to the connection's I/O loop; an ack issued as that loop dies
/// can stay pending for good, and the consumer with it.
const ACK_LIMIT: Duration = Duration::from_secs(5);

/// How often a consumer waiting for a delivery checks that its connection is
/// still up: the consumer stops on a connection that lapin no longer counts as
/// connected even if the delivery stream was never ended.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Heartbeat asked for when the URL does not name one (seconds). RabbitMQ's
/// default, 60 s, leaves a connection that died silently (a peer gone behind a
/// proxy, a cut path) looking alive for two minutes; at 10 s either side notices
/// within 20 s and the client reconnects.
const HEARTBEAT: u16 = 10;

/// Why a message did not get where it was sent.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for {0:?}: is its consumer deployed?")]
    Unroutable(String),
    #[error("no consumer of {queue:?} answered within {after:?}")]
    NoAnswer { queue: String, after: Duration },
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    #[error("the broker did not confirm in time")]
    Unconfirmed,
    #[error("no connection to the broker within {0:?}")]
    Unreachable(Duration),
    #[error("not confirmed within {0:?}: {1}")]
    GaveUp(Duration, Box<AmqpError>),
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    let mut uri: AMQPUri = url.parse().map_err(|e: String| {
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("broker URL: {e}"),
        ))
    })?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT);
    Connection::connect_uri(uri, ConnectionProperties::default()).await
}

async fn declare_events(channel: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
}

/// Waits for the broker's confirm of one publish; a mandatory message no queue took
/// comes back as `Unroutable`.
/// A confirm that does not come within [`CONFIRM_LIMIT`] is `Unconfirmed`.
async fn confirmed(confirm: lapin::PublisherConfirm, key: &str) -> Result<(), AmqpError> {
    let confirmation = tokio::time::timeout(CONFIRM_LIMIT, confirm)
        .await
        .map_err(|_| AmqpError::Unconfirmed)??;
    if !confirmation.is_ack() {
        return Err(AmqpError::Nacked);
    }
    match confirmation.take_message() {
        Some(_) => Err(AmqpError::Unroutable(key.to_string())),
        None => Ok(()),
    }
}

/// Closes a connection politely if it still works; a broken one is just dropped
/// (a close on it could wait for an answer that never comes).
async fn close(conn: Connection) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
    }
}

/// One connection and a confirming channel on it, made on first use and again
/// after it broke.
struct Link {
    url: String,
    /// The connection, its channel, and which connection this is (counted from
    /// 1): what belongs to one connection (a reply queue) is stale on the next.
    current: tokio::sync::Mutex<Option<(Connection, Channel, u64)>>,
    made: AtomicU64,
}

impl Link {
    fn new(url: &str) -> Link {
        Link {
            url: url.to_string(),
            current: tokio::sync::Mutex::new(None),
            made: AtomicU64::new(0),
        }
    }

    /// The live channel and its connection's number, connecting first when there
    /// is none or it broke.
    async fn channel(&self) -> Result<(Channel, u64), AmqpError> {
        match tokio::time::timeout(SETUP_LIMIT, self.channel_unbounded()).await {
            Ok(result) => result.map_err(AmqpError::from),
            Err(_) => {
                self.broken().await;
                Err(AmqpError::Unreachable(SETUP_LIMIT))
            }
        }
    }

    async fn channel_unbounded(&self) -> Result<(Channel, u64), lapin::Error> {
        let mut current = self.current.lock().await;
        if let Some((conn, channel, n)) = current.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok((channel.clone(), *n));
        }
        if let Some((conn, _, _)) = current.take() {
            close(conn).await;
        }
        let conn = connect(&self.url).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_events(&channel).await?;
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!("connected to the broker");
        *current = Some((conn, channel.clone(), n));
        Ok((channel, n))
    }

    /// Forgets the connection after a failure, so the next use makes a new one.
    async fn broken(&self) {
        let old = self.current.lock().await.take();
        if let Some((conn, _, _)) = old {
            close(conn).await;
        }
    }

    /// Forgets connection number `n` after a failure on it; a newer one that
    /// another call has made meanwhile stays.
    async fn broken_if(&self, n: u64) {
        let old = {
            let mut current = self.current.lock().await;
            match current.as_ref() {
                Some((_, _, made)) if *made == n => current.take(),
                _ => None,
            }
        };
        if let Some((conn, _, _)) = old {
            close(conn).await;
        }
    }
}

/// Publishes durable events, each acknowledged by the broker before `publish`
/// returns; reconnects and publishes again within its patience when the broker is
/// away. The broker confirms a persistent message to a durable queue once it is
/// stored, so a confirmed event survives a broker restart.
pub struct EventPublisher {
    link: Link,
    patience: Duration,
}

impl EventPublisher {
    /// `patience`: how long one `publish` keeps trying before it gives up.
    pub fn new(url: &str, patience: Duration) -> EventPublisher {
        EventPublisher {
            link: Link::new(url),
            patience,
        }
    }

    /// Publishes `payload` (JSON) as event `kind` (the routing key), with
    /// `message_id` so consumers can drop a redelivered duplicate.
    pub async fn publish(
        &self,
        kind: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), AmqpError> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(message_id.into())
            .with_type(kind.into());
        // The connection the latest attempt used (0: none yet).
        let used = AtomicU64::new(0);
        let result = retry(self.patience, || async {
            let (channel, conn) = self.link.channel().await?;
            used.store(conn, Ordering::Relaxed);
            let mandatory = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let confirm = channel
                .basic_publish(
                    EVENTS_EXCHANGE.into(),
                    kind.into(),
                    mandatory,
                    payload,
                    properties.clone(),
                )
                .await;
            let result = match confirm {
                Ok(confirm) => confirmed(confirm, kind).await,
                Err(e) => Err(e.into()),
            };
            if matches!(
                result,
                Err(AmqpError::Broker(_) | AmqpError::Unreachable(_) | AmqpError::Unconfirmed)
            ) {
                self.link.broken_if(conn).await;
            }
            result
        })
        .await;
        // Patience ran out mid-attempt: whatever the attempt waited on may never
        // answer, so the next publish starts on a new connection.
        if let Err(AmqpError::GaveUp(_, cause)) = &result
            && matches!(**cause, AmqpError::Unconfirmed)
        {
            self.link.broken_if(used.load(Ordering::Relaxed)).await;
        }
        result
    }
}

/// Runs `attempt` until it succeeds, an error that a retry cannot fix, or
/// `patience` is spent; between attempts it backs off (100 ms doubling to 1 s).
async fn retry<F, Fut>(patience: Duration, mut attempt: F) -> Result<(), AmqpError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), AmqpError>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(100);
    loop {
        let err = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ AmqpError::Unroutable(_))) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(AmqpError::GaveUp(
                    patience,
                    Box::new(AmqpError::Unconfirmed),
                ));
            }
        };
        if tokio::time::Instant::now() + backoff >= deadline {
            return Err(AmqpError::GaveUp(patience, Box::new(err)));
        }
        tracing::debug!(error = %err, "publish failed; trying again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// What a consumer's queue is: a durable queue bound to event keys, or a plain
/// request queue (bound to nothing: requests come by the default exchange).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub queue: String,
    /// Routing keys on [`EVENTS_EXCHANGE`].
    pub keys: Vec<String>,
}

/// Consumes `subscription` until the task is dropped, calling `handle` for each
/// delivery and acknowledging it once `handle` returns true (false: requeued).
/// `ready` is told once the queue is first declared and bound. A broken connection is made again with backoff; unacknowledged deliveries come
/// back from the broker, so `handle` must tolerate a redelivered message.
pub async fn consume_forever<H, Fut>(
    url: String,
    subscription: Subscription,
    mut ready: Part,
    handle: H,
) where
    H: Fn(Channel, Delivery) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match consume_once(&url, &subscription, &mut ready, &handle).await {
            Ok(()) => {
                tracing::warn!(queue = %subscription.queue, "consumer stopped; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(e) => tracing::warn!(queue = %subscription.queue, error = %e, "broker unreachable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn consume_once<H, Fut>(
    url: &str,
    subscription: &Subscription,
    ready: &mut Part,
    handle: &H,
) -> Result<(), lapin::Error>
where
    H: Fn(Channel, Delivery) -> Fut,
    Fut: Future<Output = bool>,
{
    let setup = tokio::time::timeout(SETUP_LIMIT, subscribe(url, subscription)).await;
    let Ok(setup) = setup else {
        return Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection to the broker within {SETUP_LIMIT:?}"),
        )));
    };
    let (conn, channel, mut deliveries) = setup?;
    tracing::info!(queue = %subscription.queue, "consuming");
    // Bound: from here on the queue keeps what is published for it.
    ready.ready();
    loop {
        let next = tokio::select! {
            next = deliveries.next() => next,
            () = lost(&conn) => return Err(stalled("the connection to the broker is down")),
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        let acker = delivery.acker.clone();
        let settled = if handle(channel.clone(), delivery).await {
            tokio::time::timeout(ACK_LIMIT, acker.ack(BasicAckOptions::default())).await
        } else {
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            tokio::time::timeout(ACK_LIMIT, acker.nack(requeue)).await
        };
        match settled {
            Ok(settled) => {
                settled?;
            }
            Err(_) => return Err(stalled("a delivery's ack was not sent in time")),
        }
    }
    close(conn).await;
    Ok(())
}

/// Completes once `conn` is no longer connected (checked every [`LIVENESS_CHECK`]).
async fn lost(conn: &Connection) {
    while conn.status().connected() {
        tokio::time::sleep(LIVENESS_CHECK).await;
    }
}

/// The error a consumer stops with when its connection stopped working without
/// lapin reporting an error.
fn stalled(why: &str) -> lapin::Error {
    lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

/// Connects, declares the queue and its bindings, and starts consuming.
async fn subscribe(
    url: &str,
    subscription: &Subscription,
) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
    let conn = connect(url).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_events(&channel).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queue: ShortString = subscription.queue.as_str().into();
    channel
        .queue_declare(queue.clone(), durable, FieldTable::default())
        .await?;
    for key in &subscription.keys {
        channel
            .queue_bind(
                queue.clone(),
                EVENTS_EXCHANGE.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel.basic_qos(32, BasicQosOptions::default()).await?;
    let deliveries = channel
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, channel, deliveries))
}

/// Answers one request a [`RequestClient`] sent: `reply` goes to the request's reply
/// queue with its correlation id. A request without them is dropped (logged).
pub async fn reply(channel: &Channel, request: &Delivery, reply: &[u8]) -> Result<(), AmqpError> {
    let props = &request.properties;
    let (Some(reply_to), Some(correlation)) = (props.reply_to(), props.correlation_id()) else {
        tracing::warn!("request without reply_to or correlation_id; not answered");
        return Ok(());
    };
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id(correlation.clone());
    // The publish itself is bounded too: its frame may never be sent on a
    // connection that is going away.
    let publish = async {
        let confirm = channel
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                reply,
                properties,
            )
            .await?;
        confirmed(confirm, reply_to.as_str()).await
    };
    tokio::time::timeout(CONFIRM_LIMIT, publish)
        .await
        .unwrap_or(Err(AmqpError::Unconfirmed))
}

/// Calls waiting for an answer, by correlation id, with the number of the
/// connection whose reply queue the answer comes to.
type Pending = Arc<Mutex<HashMap<String, (u64, oneshot::Sender<Vec<u8>>)>>>;

/// Request-reply over the broker: each request goes to a named queue with the
/// client's own reply queue (exclusive to its connection) and a fresh correlation
/// id; the answer with that id completes the call. A request nobody answers in
/// time fails with a clear error and expires in its queue, so a consumer that comes
/// back later does not act on it.
pub struct RequestClient {
    link: Link,
    /// The reply queue, and the number of the connection it belongs to.
    reply_queue: tokio::sync::Mutex<Option<(u64, String)>>,
    pending: Pending,
    next: AtomicU64,
    prefix: String,
}

impl RequestClient {
    pub fn new(url: &str) -> RequestClient {
        RequestClient {
            link: Link::new(url),
            reply_queue: tokio::sync::Mutex::new(None),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(1),
            prefix: format!("{:x}", std::process::id()),
        }
    }

    /// The reply queue on `channel`'s connection, consumed by a task that hands each
    /// answer to its pending call.
    async fn reply_queue(&self, channel: &Channel, conn: u64) -> Result<String, lapin::Error> {
        let mut current = self.reply_queue.lock().await;
        if let Some((made_on, queue)) = current.as_ref()
            && *made_on == conn
        {
            return Ok(queue.clone());
        }
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare("".into(), private, FieldTable::default())
            .await?;
        let name = queue.name().as_str().to_string();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut answers = channel
            .basic_consume(
                name.as_str().into(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await?;
        let pending = self.pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(answer)) = answers.next().await {
                let Some(id) = answer.properties.correlation_id() else {
                    continue;
                };
                let waiter = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(id.as_str());
                // A late answer to a call that timed out has nobody to go to.
                if let Some((_, waiter)) = waiter {
                    let _ = waiter.send(answer.data);
                }
            }
            // No answer comes to this reply queue any more: its waiting calls
            // fail now instead of at their timeout.
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, (made_on, _)| *made_on != conn);
        });
        *current = Some((conn, name.clone()));
        Ok(name)
    }

    /// Sends `request` to `queue` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        queue: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, AmqpError> {
        let ready = async {
            let (channel, conn) = self.link.channel().await?;
            let reply_queue = tokio::time::timeout(SETUP_LIMIT, self.reply_queue(&channel, conn))
                .await
                .map_err(|_| AmqpError::Unreachable(SETUP_LIMIT))??;
            Ok::<_, AmqpError>((channel, conn, reply_queue))
        };
        let (channel, conn, reply_queue) = match ready.await {
            Ok(ready) => ready,
            Err(e) => {
                self.link.broken().await;
                return Err(e);
            }
        };
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), (conn, tx));
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(reply_queue.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_expiration(timeout.as_millis().to_string().as_str().into());
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let publish = async {
            let confirm = channel
                .basic_publish("".into(), queue.into(), mandatory, request, properties)
                .await?;
            confirmed(confirm, queue).await
        };
        let published = tokio::time::timeout(timeout, publish)
            .await
            .unwrap_or(Err(AmqpError::Unconfirmed));
        if let Err(e) = published {
            forget();
            if matches!(e, AmqpError::Broker(_) | AmqpError::Unconfirmed) {
                self.link.broken_if(conn).await;
            }
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The reply queue's consumer ended with its channel: the next call
            // needs a new connection (and reply queue).
            Ok(Err(_)) => {
                self.link.broken_if(conn).await;
                Err(AmqpError::NoAnswer {
                    queue: queue.to_string(),
                    after: timeout,
                })
            }
            Err(_) => {
                forget();
                Err(AmqpError::NoAnswer {
                    queue: queue.to_string(),
                    after: timeout,
                })
            }
        }
    }
}

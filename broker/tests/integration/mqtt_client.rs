//! One client interface over rumqttc's MQTT 3.1.1 and 5.0 clients, so each
//! scenario is written once and runs for both protocol versions (the way
//! loadgen's `MqttLoop` drives both event loops).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use broker::RunningBroker;
use rumqttc::v5::mqttbytes::v5 as packets5;
use rumqttc::{Outgoing, Transport};
use tokio::time::timeout;

use crate::common::WAIT;

/// The 3.1.1 QoS enum is the shared vocabulary; the 5.0 client converts it.
pub use rumqttc::QoS;

/// What a scenario asks of a connection, in terms both versions share.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub id: String,
    /// Resume or keep the session: Clean Session 0 in 3.1.1; Clean Start 0
    /// with a 60 s Session Expiry Interval in 5.0.
    pub persistent: bool,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    pub will: Option<Will>,
    /// MQTT over WebSocket at `addr` instead of TCP.
    pub websocket: bool,
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: String,
    pub qos: QoS,
    pub retain: bool,
}

impl Options {
    pub fn new(addr: SocketAddr, id: &str) -> Options {
        Options {
            addr,
            id: id.to_string(),
            persistent: false,
            keep_alive: Duration::from_secs(30),
            credentials: None,
            will: None,
            websocket: false,
        }
    }

    pub fn persistent(mut self, persistent: bool) -> Options {
        self.persistent = persistent;
        self
    }

    pub fn credentials(mut self, user: &str, password: &str) -> Options {
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }

    pub fn will(mut self, topic: &str, payload: &str, qos: QoS, retain: bool) -> Options {
        self.will = Some(Will {
            topic: topic.to_string(),
            payload: payload.to_string(),
            qos,
            retain,
        });
        self
    }

    pub fn websocket(mut self) -> Options {
        self.websocket = true;
        self
    }
}

/// A PUBLISH the client received; `packet` is the version's own, for
/// what only that version has (5.0 properties, manual acks).
#[derive(Debug, Clone)]
pub struct Msg<P> {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub pkid: u16,
    pub packet: P,
}

impl<P> Msg<P> {
    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).expect("UTF-8 payload")
    }
}

/// The CONNACK, with the version's own packet for its properties.
pub struct Connected<C: MqttClient> {
    pub code: C::Code,
    pub session_present: bool,
    pub packet: C::ConnAck,
}

/// The events scenarios wait for, from either event loop.
#[derive(Debug, Clone)]
pub enum Event<P> {
    ConnAck,
    Publish(Msg<P>),
    PubAck,
    PubRec,
    /// PUBREL from the broker, with its packet id.
    PubRel(u16),
    PubComp,
    /// The granted QoS of the first filter, or the failure code.
    SubAck(Result<QoS, String>),
    UnsubAck,
    PingResp,
    Sent(Outgoing),
    Other,
}

/// A connected rumqttc client (request handle and event loop together).
pub trait MqttClient: Sized {
    /// The protocol level byte of CONNECT, for raw clients in the same scenario.
    const LEVEL: u8;
    type MqttOptions;
    type Publish: Clone + Debug;
    type ConnAck: Debug;
    type Code: Debug + PartialEq;
    type Error: Debug;
    const SUCCESS: Self::Code;
    const BAD_CREDENTIALS: Self::Code;
    const NOT_AUTHORIZED: Self::Code;
    /// The refusal when the broker is at its connection limit.
    const CONNECTION_LIMIT: Self::Code;

    fn mqtt_options(o: &Options) -> Self::MqttOptions;
    fn new(opts: Self::MqttOptions) -> Self;
    /// The connection error of a refused CONNECT, if it is one.
    fn refusal(e: &Self::Error) -> Option<Self::Code>;
    /// Asserts `e` is how this version learns its client id was taken over.
    fn check_taken_over(e: Self::Error);
    /// Asserts `e` is how this version learns the broker is shutting down.
    fn check_shutdown(e: Self::Error);

    async fn poll(&mut self) -> Result<Event<Self::Publish>, Self::Error>;
    /// Polls until CONNACK (which `poll` reports as [`Event::ConnAck`]).
    async fn connack(&mut self) -> Result<Connected<Self>, Self::Error>;
    async fn subscribe_request(&self, filter: &str, qos: QoS);
    async fn unsubscribe_request(&self, filter: &str);
    async fn publish_request(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>);
    async fn disconnect_request(&self);

    /// Starts the client and polls until CONNACK; panics on refusal.
    async fn start_with(opts: Self::MqttOptions) -> (Self, Connected<Self>) {
        let mut c = Self::new(opts);
        let ack = timeout(WAIT, c.connack())
            .await
            .expect("CONNACK in time")
            .unwrap_or_else(|e| panic!("connect failed: {e:?}"));
        (c, ack)
    }

    async fn start(o: Options) -> (Self, Connected<Self>) {
        Self::start_with(Self::mqtt_options(&o)).await
    }

    /// The return code of a refused CONNECT.
    async fn refused(o: Options) -> Self::Code {
        let mut c = Self::new(Self::mqtt_options(&o));
        match timeout(WAIT, c.poll()).await.expect("CONNACK in time") {
            Err(e) => Self::refusal(&e)
                .unwrap_or_else(|| panic!("expected a refused connection, got {e:?}")),
            Ok(ev) => panic!("expected a refused connection, got {ev:?}"),
        }
    }

    /// A clean connection that the broker accepts.
    async fn connect(b: &RunningBroker, id: &str) -> Self {
        Self::connect_session(b, id, false).await.0
    }

    /// An accepted connection; returns whether a session was present.
    async fn connect_session(b: &RunningBroker, id: &str, persistent: bool) -> (Self, bool) {
        let (c, ack) = Self::start(Options::new(b.mqtt_addr, id).persistent(persistent)).await;
        assert_eq!(ack.code, Self::SUCCESS);
        (c, ack.session_present)
    }

    /// Polls until `f` picks an event; panics on a connection error or timeout.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Event<Self::Publish>) -> Option<T>,
    ) -> T {
        timeout(WAIT, async {
            loop {
                match self.poll().await {
                    Ok(ev) => {
                        if let Some(t) = f(&ev) {
                            return t;
                        }
                    }
                    Err(e) => panic!("waiting for {what}: connection error {e:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Subscribes one filter and returns what the SUBACK grants.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<QoS, String> {
        self.subscribe_request(filter, qos).await;
        self.wait_for("SUBACK", |ev| match ev {
            Event::SubAck(granted) => Some(granted.clone()),
            _ => None,
        })
        .await
    }

    async fn unsubscribe(&mut self, filter: &str) {
        self.unsubscribe_request(filter).await;
        self.wait_for("UNSUBACK", |ev| matches!(ev, Event::UnsubAck).then_some(()))
            .await
    }

    /// Publishes and waits until the flow is complete (sent / PUBACK / PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.publish_request(topic, qos, retain, payload.into())
            .await;
        self.wait_publish_flow(qos).await
    }

    async fn wait_publish_flow(&mut self, qos: QoS) {
        self.wait_for("publish flow", |ev| {
            let done = match qos {
                QoS::AtMostOnce => matches!(ev, Event::Sent(Outgoing::Publish(_))),
                QoS::AtLeastOnce => matches!(ev, Event::PubAck),
                QoS::ExactlyOnce => matches!(ev, Event::PubComp),
            };
            done.then_some(())
        })
        .await
    }

    async fn next_publish(&mut self) -> Msg<Self::Publish> {
        self.wait_for("PUBLISH", |ev| match ev {
            Event::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Polls for `window` and fails if a PUBLISH (or a connection error) shows up.
    async fn expect_no_publish(&mut self, window: Duration) {
        let got = timeout(window, async {
            loop {
                match self.poll().await {
                    Ok(Event::Publish(p)) => return Ok(p),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match got {
            Err(_elapsed) => {}
            Ok(Ok(p)) => panic!("unexpected PUBLISH: {p:?}"),
            Ok(Err(e)) => panic!("connection error while expecting silence: {e:?}"),
        }
    }

    /// Sends DISCONNECT and waits until the broker has closed the connection,
    /// i.e. has detached the session (so later messages are queued, not sent).
    async fn disconnect(mut self) {
        self.disconnect_request().await;
        self.wait_for("outgoing DISCONNECT", |ev| {
            matches!(ev, Event::Sent(Outgoing::Disconnect)).then_some(())
        })
        .await;
        self.expect_connection_closed().await;
    }

    /// Polls until the connection fails (the broker closed it); returns the error.
    async fn expect_connection_closed(&mut self) -> Self::Error {
        timeout(WAIT, async {
            loop {
                if let Err(e) = self.poll().await {
                    return e;
                }
            }
        })
        .await
        .expect("the broker closes the connection in time")
    }
}

/// rumqttc's MQTT 3.1.1 client.
pub struct V311 {
    pub client: rumqttc::AsyncClient,
    pub el: rumqttc::EventLoop,
}

/// rumqttc's MQTT 5.0 client.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub el: rumqttc::v5::EventLoop,
}

/// A broker address as rumqttc takes it: host and port, or the WebSocket URL.
fn broker_url(o: &Options) -> (String, u16) {
    if o.websocket {
        let port = o.addr.port();
        (format!("ws://{}:{port}/mqtt", o.addr.ip()), port)
    } else {
        (o.addr.ip().to_string(), o.addr.port())
    }
}

impl MqttClient for V311 {
    const LEVEL: u8 = 4;
    type MqttOptions = rumqttc::MqttOptions;
    type Publish = rumqttc::Publish;
    type ConnAck = rumqttc::ConnAck;
    type Code = rumqttc::ConnectReturnCode;
    type Error = rumqttc::ConnectionError;
    const SUCCESS: Self::Code = rumqttc::ConnectReturnCode::Success;
    const BAD_CREDENTIALS: Self::Code = rumqttc::ConnectReturnCode::BadUserNamePassword;
    const NOT_AUTHORIZED: Self::Code = rumqttc::ConnectReturnCode::NotAuthorized;
    const CONNECTION_LIMIT: Self::Code = rumqttc::ConnectReturnCode::ServiceUnavailable;

    fn mqtt_options(o: &Options) -> rumqttc::MqttOptions {
        let (host, port) = broker_url(o);
        let mut m = rumqttc::MqttOptions::new(&o.id, host, port);
        m.set_keep_alive(o.keep_alive);
        m.set_clean_session(!o.persistent);
        if let Some((user, password)) = &o.credentials {
            m.set_credentials(user, password);
        }
        if let Some(w) = &o.will {
            m.set_last_will(rumqttc::LastWill::new(
                &w.topic,
                w.payload.as_bytes(),
                w.qos,
                w.retain,
            ));
        }
        if o.websocket {
            m.set_transport(Transport::Ws);
        }
        m
    }

    fn new(opts: rumqttc::MqttOptions) -> V311 {
        let (client, el) = rumqttc::AsyncClient::new(opts, 64);
        V311 { client, el }
    }

    fn refusal(e: &rumqttc::ConnectionError) -> Option<Self::Code> {
        match e {
            rumqttc::ConnectionError::ConnectionRefused(code) => Some(*code),
            _ => None,
        }
    }

    fn check_taken_over(e: rumqttc::ConnectionError) {
        // 3.1.1 has no server DISCONNECT: the connection just ends.
        assert!(
            !matches!(e, rumqttc::ConnectionError::ConnectionRefused(_)),
            "{e:?}"
        );
    }

    fn check_shutdown(_: rumqttc::ConnectionError) {
        // 3.1.1 has no server DISCONNECT: any end of the connection is it.
    }

    async fn poll(&mut self) -> Result<Event<rumqttc::Publish>, rumqttc::ConnectionError> {
        use rumqttc::{Event as E, Packet as P, SubscribeReasonCode};
        Ok(match self.el.poll().await? {
            E::Incoming(P::ConnAck(_)) => Event::ConnAck,
            E::Incoming(P::Publish(p)) => Event::Publish(Msg {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                pkid: p.pkid,
                packet: p,
            }),
            E::Incoming(P::PubAck(_)) => Event::PubAck,
            E::Incoming(P::PubRec(_)) => Event::PubRec,
            E::Incoming(P::PubRel(r)) => Event::PubRel(r.pkid),
            E::Incoming(P::PubComp(_)) => Event::PubComp,
            E::Incoming(P::SubAck(s)) => Event::SubAck(match s.return_codes[0] {
                SubscribeReasonCode::Success(qos) => Ok(qos),
                code => Err(format!("{code:?}")),
            }),
            E::Incoming(P::UnsubAck(_)) => Event::UnsubAck,
            E::Incoming(P::PingResp) => Event::PingResp,
            E::Outgoing(out) => Event::Sent(out),
            E::Incoming(_) => Event::Other,
        })
    }

    async fn connack(&mut self) -> Result<Connected<V311>, rumqttc::ConnectionError> {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)) = self.el.poll().await? {
                return Ok(Connected {
                    code: ack.code,
                    session_present: ack.session_present,
                    packet: ack,
                });
            }
        }
    }

    async fn subscribe_request(&self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
    }

    async fn unsubscribe_request(&self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
    }

    async fn publish_request(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .unwrap();
    }

    async fn disconnect_request(&self) {
        self.client.disconnect().await.unwrap();
    }
}

pub fn to_v5(qos: QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match qos {
        QoS::AtMostOnce => Q5::AtMostOnce,
        QoS::AtLeastOnce => Q5::AtLeastOnce,
        QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

fn from_v5(qos: rumqttc::v5::mqttbytes::QoS) -> QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match qos {
        Q5::AtMostOnce => QoS::AtMostOnce,
        Q5::AtLeastOnce => QoS::AtLeastOnce,
        Q5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Asserts the 5.0 connection ended with the broker's DISCONNECT `reason`.
fn check_server_disconnect(
    e: rumqttc::v5::ConnectionError,
    reason: packets5::DisconnectReasonCode,
) {
    use rumqttc::v5::{ConnectionError, StateError};
    match e {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            assert_eq!(reason_code, reason)
        }
        other => panic!("expected a DISCONNECT {reason:?} from the broker, got {other:?}"),
    }
}

impl MqttClient for V5 {
    const LEVEL: u8 = 5;
    type MqttOptions = rumqttc::v5::MqttOptions;
    type Publish = packets5::Publish;
    type ConnAck = packets5::ConnAck;
    type Code = packets5::ConnectReturnCode;
    type Error = rumqttc::v5::ConnectionError;
    const SUCCESS: Self::Code = packets5::ConnectReturnCode::Success;
    const BAD_CREDENTIALS: Self::Code = packets5::ConnectReturnCode::BadUserNamePassword;
    const NOT_AUTHORIZED: Self::Code = packets5::ConnectReturnCode::NotAuthorized;
    const CONNECTION_LIMIT: Self::Code = packets5::ConnectReturnCode::QuotaExceeded;

    fn mqtt_options(o: &Options) -> rumqttc::v5::MqttOptions {
        let (host, port) = broker_url(o);
        let mut m = rumqttc::v5::MqttOptions::new(&o.id, host, port);
        m.set_keep_alive(o.keep_alive);
        if o.persistent {
            m.set_clean_start(false);
            m.set_session_expiry_interval(Some(60));
        }
        if let Some((user, password)) = &o.credentials {
            m.set_credentials(user, password);
        }
        if let Some(w) = &o.will {
            m.set_last_will(packets5::LastWill::new(
                &w.topic,
                w.payload.clone(),
                to_v5(w.qos),
                w.retain,
                None,
            ));
        }
        if o.websocket {
            m.set_transport(Transport::Ws);
        }
        m
    }

    fn new(opts: rumqttc::v5::MqttOptions) -> V5 {
        let (client, el) = rumqttc::v5::AsyncClient::new(opts, 64);
        V5 { client, el }
    }

    fn refusal(e: &rumqttc::v5::ConnectionError) -> Option<Self::Code> {
        match e {
            rumqttc::v5::ConnectionError::ConnectionRefused(code) => Some(*code),
            _ => None,
        }
    }

    fn check_taken_over(e: rumqttc::v5::ConnectionError) {
        check_server_disconnect(e, packets5::DisconnectReasonCode::SessionTakenOver)
    }

    fn check_shutdown(e: rumqttc::v5::ConnectionError) {
        check_server_disconnect(e, packets5::DisconnectReasonCode::ServerShuttingDown)
    }

    async fn poll(&mut self) -> Result<Event<packets5::Publish>, rumqttc::v5::ConnectionError> {
        use packets5::{Packet as P, SubscribeReasonCode};
        use rumqttc::v5::Event as E;
        Ok(match self.el.poll().await? {
            E::Incoming(P::ConnAck(_)) => Event::ConnAck,
            E::Incoming(P::Publish(p)) => Event::Publish(Msg {
                topic: String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic"),
                payload: p.payload.to_vec(),
                qos: from_v5(p.qos),
                retain: p.retain,
                pkid: p.pkid,
                packet: p,
            }),
            E::Incoming(P::PubAck(_)) => Event::PubAck,
            E::Incoming(P::PubRec(_)) => Event::PubRec,
            E::Incoming(P::PubRel(r)) => Event::PubRel(r.pkid),
            E::Incoming(P::PubComp(_)) => Event::PubComp,
            E::Incoming(P::SubAck(s)) => Event::SubAck(match s.return_codes[0] {
                SubscribeReasonCode::Success(qos) => Ok(from_v5(qos)),
                code => Err(format!("{code:?}")),
            }),
            E::Incoming(P::UnsubAck(_)) => Event::UnsubAck,
            E::Incoming(P::PingResp(_)) => Event::PingResp,
            E::Outgoing(out) => Event::Sent(out),
            E::Incoming(_) => Event::Other,
        })
    }

    async fn connack(&mut self) -> Result<Connected<V5>, rumqttc::v5::ConnectionError> {
        use rumqttc::v5::Event as E;
        loop {
            if let E::Incoming(packets5::Packet::ConnAck(ack)) = self.el.poll().await? {
                return Ok(Connected {
                    code: ack.code,
                    session_present: ack.session_present,
                    packet: ack,
                });
            }
        }
    }

    async fn subscribe_request(&self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, to_v5(qos)).await.unwrap();
    }

    async fn unsubscribe_request(&self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
    }

    async fn publish_request(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, to_v5(qos), retain, payload)
            .await
            .unwrap();
    }

    async fn disconnect_request(&self) {
        self.client.disconnect().await.unwrap();
    }
}

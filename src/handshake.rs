//! The server side of one TLS handshake, run on a library thread and bounded
//! by one deadline from TCP accept to completion.
//!
//! Every event of a connection before PENDING_CONNECTION_AVAILABLE comes from
//! here (or from the verifier rustls calls from here), in the order of the
//! table in the C contract.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::SendFlags;
use rustls::pki_types::UnixTime;
use rustls::ServerConnection;

use crate::connection::Connection;
use crate::error::os_reason;
use crate::events::{Event, EventSink, SslError};
use crate::proxy_protocol;
use crate::tls::ServerTls;
use crate::types::{AlertLevel, AlertType, EventKind, ProxyProtocol, SocketError, SslErrorCode};
use crate::verify::{self, Refusal};

/// The first byte of a TLS record carrying a handshake message.
const HANDSHAKE_RECORD: u8 = 0x16;
/// The first byte of a TLS record carrying an alert.
const ALERT_RECORD: u8 = 0x15;
/// The first byte of a TLS record carrying ChangeCipherSpec.
const CHANGE_CIPHER_SPEC_RECORD: u8 = 0x14;
/// The first byte of a protected TLS 1.3 record (and of application data).
const APPLICATION_DATA_RECORD: u8 = 0x17;
/// The payload of a TLS 1.3 record carrying only an encrypted alert: two
/// bytes of alert, the inner content type and a 16-byte AEAD tag (every
/// TLS 1.3 suite rustls offers has one; rustls does not pad). A protected
/// handshake message is at least 21 bytes (a 4-byte header).
const ENCRYPTED_ALERT_LEN: usize = 2 + 1 + 16;
/// After a fatal alert, how long to read (and drop) what the client still
/// sends, so closing does not reset the connection before the alert arrives.
const ALERT_LINGER: Duration = Duration::from_millis(250);

/// One deadline for the whole handshake. Each wait for the socket lasts at
/// most until it, so a client that drips a byte at a time gains nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandshakeDeadline {
    at: Option<Instant>,
    timeout_ms: i32,
}

/// The deadline has passed.
pub(crate) struct Expired;

impl HandshakeDeadline {
    /// `timeout_ms` from now; -1 means none.
    pub(crate) fn starting_now(timeout_ms: i32) -> Self {
        let at = u64::try_from(timeout_ms)
            .ok()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        HandshakeDeadline { at, timeout_ms }
    }

    pub(crate) fn timeout_ms(&self) -> i32 {
        self.timeout_ms
    }

    /// Time left (`None` = no deadline).
    pub(crate) fn remaining(&self) -> Result<Option<Duration>, Expired> {
        match self.at {
            None => Ok(None),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                // Never 0 while time is left: `connect_timeout` refuses 0,
                // and a poll of 0 returns at once.
                Some(left) if !left.is_zero() => Ok(Some(left.max(Duration::from_millis(1)))),
                _ => Err(Expired),
            },
        }
    }

    /// Waits until `stream` is ready for `flags` (or has an error or its
    /// end, which the next receive or send reports), at most until the
    /// deadline. Waiting with `poll` instead of blocking in the call spares
    /// the handshake a socket timeout to set before each call and to clear
    /// after. Returning early (a signal) is harmless: the caller tries, and
    /// comes back.
    pub(crate) fn wait_for(&self, stream: &TcpStream, flags: PollFlags) -> Result<(), WaitFailed> {
        // Only a wait beyond i64 seconds fails to convert: that is forever.
        let timeout = self
            .remaining()?
            .and_then(|left| Timespec::try_from(left).ok());
        let mut fds = [PollFd::new(stream, flags)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => Err(WaitFailed::Expired),
            Ok(_) | Err(Errno::INTR) => Ok(()),
            // Waiting again would fail again: a spin.
            Err(e) => Err(WaitFailed::Io(e.into())),
        }
    }
}

/// Why a wait for the socket ended without it being ready.
pub(crate) enum WaitFailed {
    Expired,
    /// `poll` itself failed (out of memory, say).
    Io(io::Error),
}

impl From<Expired> for WaitFailed {
    fn from(_: Expired) -> Self {
        WaitFailed::Expired
    }
}

impl From<WaitFailed> for Failure {
    fn from(failed: WaitFailed) -> Self {
        match failed {
            WaitFailed::Expired => Failure::Timeout,
            WaitFailed::Io(e) => Failure::Io(e),
        }
    }
}

/// Why a handshake did not complete.
pub(crate) enum Failure {
    Timeout,
    PeerClosed,
    NotTls(u8),
    Io(io::Error),
    /// rustls refused the handshake; the fatal alert to send for it, when
    /// one can go out.
    Tls(rustls::Error, Option<FatalAlert>),
    /// The peer's certificate chain (of a resumed session) was judged and
    /// refused; its errors were reported then. The alert to send, if any.
    Refused(rustls::Error, Option<FatalAlert>),
    /// rustls refused the peer's bytes before parsing them (corrupt framing,
    /// a handshake message over 64 KiB); the alert to send for it.
    Unreadable(String, AlertType),
    Internal(String),
}

/// A fatal alert that goes out before the socket closes: the bytes that
/// carry it, and which alert it is.
pub(crate) struct FatalAlert {
    pub(crate) bytes: Vec<u8>,
    pub(crate) alert: AlertType,
}

impl From<Expired> for Failure {
    fn from(_: Expired) -> Self {
        Failure::Timeout
    }
}

/// Runs the handshake of an accepted connection and reports its events,
/// after its PROXY protocol header if `proxy` requires one. Returns the
/// connection's TLS state on success; on failure the socket is closed and
/// ERROR_OCCURRED has been emitted.
///
/// NEW_CONNECTION comes after the header, so that it names the client the
/// header gave; a connection refused for its header gets ERROR_OCCURRED
/// alone, and no byte of its TLS stream has been looked at.
pub(crate) fn perform(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    proxy: ProxyProtocol,
    deadline: HandshakeDeadline,
) -> Option<rustls::Connection> {
    if proxy == ProxyProtocol::Required {
        match proxy_protocol::receive(connection, deadline) {
            Ok(header) => {
                if let Some(client) = header.client {
                    connection.set_proxied_peer(client);
                }
            }
            Err(failure) => {
                let (error, text) = failure.describe(deadline.timeout_ms);
                report_failure(connection, events, error, text);
                return None;
            }
        }
    }
    events.emit(EventKind::NewConnection, || {
        Event::new(EventKind::NewConnection, Some(connection))
            .describe(format!("new connection from {}", connection.peer_display()))
    });
    perform_server_side(connection, tls, events, deadline)
}

/// The server's handshake on a connection, without NEW_CONNECTION: for an
/// accepted connection after it, and for a socket upgraded in place
/// (`sslsocket_start_server_encryption`).
pub(crate) fn perform_server_side(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    deadline: HandshakeDeadline,
) -> Option<rustls::Connection> {
    let result = drive(connection, tls, events, deadline)
        .and_then(|server| check_missing_certificate(connection, tls, events, server));
    match result {
        Ok(server) => Some(server),
        Err(failure) => {
            fail(connection, tls, events, deadline, failure);
            None
        }
    }
}

fn drive(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    deadline: HandshakeDeadline,
) -> Result<rustls::Connection, Failure> {
    let first = first_byte(connection, deadline)?;
    if first != HANDSHAKE_RECORD {
        return Err(Failure::NotTls(first));
    }
    events.emit(EventKind::StartedEncryptionHandshake, || {
        Event::new(EventKind::StartedEncryptionHandshake, Some(connection))
            .describe("TLS handshake started")
    });
    let config = tls
        .for_connection(connection, events)
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let server = ServerConnection::new(config).map_err(|e| Failure::Internal(e.to_string()))?;
    let mut server = rustls::Connection::Server(server);
    complete(
        connection,
        &mut server,
        deadline,
        &mut |server| match tls.client_auth() {
            Some(policy) => policy.judge(
                connection,
                events,
                server.peer_certificates(),
                UnixTime::now(),
            ),
            None => Ok(()),
        },
    )?;
    Ok(server)
}

/// Judges the peer's certificate chain of a resumed session. rustls does
/// not ask the certificate verifier when a session resumes: the chain comes
/// from the ticket (or the session cache), and a decision taken for the
/// connection that got the ticket must not carry over to this one.
pub(crate) type ResumedSessionCheck<'a> =
    &'a mut dyn FnMut(&rustls::Connection) -> Result<(), Refusal>;

/// Drives either side's handshake to completion (or failure) within the
/// deadline. A resumed session is judged by `judge_resumed` as soon as
/// rustls has accepted it, before this side sends anything for it.
pub(crate) fn complete(
    connection: &Connection,
    tls: &mut rustls::Connection,
    deadline: HandshakeDeadline,
    judge_resumed: ResumedSessionCheck<'_>,
) -> Result<(), Failure> {
    let mut outgoing = Outgoing::default();
    let mut judged = false;
    while tls.is_handshaking() {
        let sent = outgoing.send_pending(connection, tls, deadline)?;
        match read_some(connection, tls, deadline, sent) {
            Err(Failure::Unreadable(text, alert)) => {
                let err = rustls::Error::General(text);
                return Err(Failure::Tls(err, outgoing.own_alert(tls, alert)));
            }
            other => other?,
        }
        if let Err(err) = tls.process_new_packets() {
            let alert = outgoing
                .queued_alert(tls, &err)
                .or_else(|| outgoing.own_alert(tls, alert_for(&err)));
            return Err(Failure::Tls(err, alert));
        }
        if !judged && tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            judged = true;
            if let Err(refusal) = judge_resumed(tls) {
                // Nothing of the resumed session has been sent: a server
                // can still refuse it with a plaintext alert.
                let alert = outgoing.own_alert(tls, refusal.alert);
                return Err(Failure::Refused(refusal.error, alert));
            }
        }
    }
    // The last flight (and TLS 1.3 session tickets) follow.
    outgoing.send_pending(connection, tls, deadline).map(drop)
}

/// What this side of the handshake has sent. Once the peer has been sent a
/// protected record, an alert needs keys only rustls holds; until then the
/// library can send a plaintext alert for the errors rustls closes on
/// silently (a handshake message over 64 KiB, interleaved or empty
/// records).
#[derive(Default)]
struct Outgoing {
    /// Reused for every flight: rustls's records are copied here and then
    /// written, so their types can be seen.
    buffer: Vec<u8>,
    protected: bool,
}

impl Outgoing {
    /// Sends what rustls has queued; true if there was something.
    fn send_pending(
        &mut self,
        connection: &Connection,
        tls: &mut rustls::Connection,
        deadline: HandshakeDeadline,
    ) -> Result<bool, Failure> {
        self.take_queued(tls);
        // ChangeCipherSpec switches keys in TLS 1.2; in TLS 1.3 it is a
        // middlebox decoy, and protected records are application data.
        let tls13 = tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        self.protected |= records(&self.buffer).any(|(kind, _)| {
            kind == APPLICATION_DATA_RECORD || (kind == CHANGE_CIPHER_SPEC_RECORD && !tls13)
        });
        let mut written = 0;
        while written < self.buffer.len() {
            deadline.remaining()?;
            // A flight fits an empty send buffer: this send rarely waits.
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::send(connection.stream(), &self.buffer[written..], flags) {
                Ok(0) => return Err(Failure::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(Errno::AGAIN) => deadline.wait_for(connection.stream(), PollFlags::OUT)?,
                Err(Errno::INTR) => {}
                Err(e) => return Err(Failure::Io(e.into())),
            }
        }
        Ok(!self.buffer.is_empty())
    }

    fn take_queued(&mut self, tls: &mut rustls::Connection) {
        self.buffer.clear();
        while tls.wants_write() {
            // Writing to a Vec cannot fail.
            let _ = tls.write_tls(&mut self.buffer);
        }
    }

    /// What rustls queued after refusing the handshake, when it ends with
    /// the fatal alert. rustls may queue the rest of its flight first (and
    /// a ChangeCipherSpec before the alert); the alert is always last.
    fn queued_alert(
        &mut self,
        tls: &mut rustls::Connection,
        err: &rustls::Error,
    ) -> Option<FatalAlert> {
        self.take_queued(tls);
        let tls13 = tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        let alert = match records(&self.buffer).last()? {
            (ALERT_RECORD, [_level, description]) => AlertType::from_wire(*description),
            // Encrypted (TLS 1.2 keeps the content type): rustls's alert
            // for the error.
            (ALERT_RECORD, _) => alert_for(err),
            (APPLICATION_DATA_RECORD, payload) if tls13 && payload.len() == ENCRYPTED_ALERT_LEN => {
                alert_for(err)
            }
            _ => return None,
        };
        Some(FatalAlert {
            bytes: std::mem::take(&mut self.buffer),
            alert,
        })
    }

    /// A plaintext fatal alert, when the client can still read one. The rest
    /// of a flight rustls queued is not sent, so the client that gets the
    /// alert has seen no key change. (A client's keys change when it reads
    /// the server's flight, not when it writes, so only a server knows from
    /// what it sent.)
    fn own_alert(&self, tls: &rustls::Connection, alert: AlertType) -> Option<FatalAlert> {
        let server = matches!(tls, rustls::Connection::Server(_));
        (server && !self.protected).then(|| FatalAlert {
            bytes: vec![ALERT_RECORD, 3, 3, 0, 2, 2, alert as u8],
            alert,
        })
    }
}

/// The (content type, payload) of each whole TLS record in `bytes`.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [kind, _, _, high, low, rest @ ..] = bytes else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*high, *low]));
        let payload = rest.get(..len)?;
        bytes = &rest[len..];
        Some((*kind, payload))
    })
}

/// The SNI name a client asked for.
pub(crate) fn requested_server_name(tls: &rustls::Connection) -> Option<String> {
    match tls {
        rustls::Connection::Server(server) => server.server_name().map(str::to_string),
        rustls::Connection::Client(_) => None,
    }
}

/// VERIFY_PEER without a client certificate gets here from a full handshake
/// only when the application ignored errors up front; report the error Qt
/// reports. (A resumed session was judged in `complete`.)
fn check_missing_certificate(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    server: rustls::Connection,
) -> Result<rustls::Connection, Failure> {
    if let Some(policy) = tls.client_auth() {
        // Full, with or without a HelloRetryRequest (which the client can
        // force): everything but a resumption, judged in `complete`.
        if server.handshake_kind() != Some(rustls::HandshakeKind::Resumed)
            && server.peer_certificates().is_none()
        {
            policy
                .judge(connection, events, None, UnixTime::now())
                .map_err(|_| Failure::Internal("the client sent no certificate".to_string()))?;
        }
    }
    Ok(server)
}

/// Waits for the first byte, and leaves it (with what came with it) where
/// the handshake reads first.
fn first_byte(connection: &Connection, deadline: HandshakeDeadline) -> Result<u8, Failure> {
    loop {
        // The ClientHello has usually arrived by the time a thread runs
        // this: receive first, wait only if it has not.
        match connection.first_handshake_byte() {
            Ok(Some(byte)) => return Ok(byte),
            Ok(None) => return Err(Failure::PeerClosed),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                deadline.wait_for(connection.stream(), PollFlags::IN)?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// Takes in the peer's next bytes. `answer_due`: a flight has just left,
/// so the peer's answer cannot be there yet; wait before receiving (unless
/// bytes are already buffered).
fn read_some(
    connection: &Connection,
    tls: &mut rustls::Connection,
    deadline: HandshakeDeadline,
    answer_due: bool,
) -> Result<(), Failure> {
    if answer_due && connection.buffered_handshake_byte().is_none() {
        deadline.wait_for(connection.stream(), PollFlags::IN)?;
    }
    loop {
        match tls.read_tls(&mut connection.handshake_input()) {
            Ok(0) => return Err(Failure::PeerClosed),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                deadline.wait_for(connection.stream(), PollFlags::IN)?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // rustls refused the bytes before parsing them into messages
            // (corrupt framing, a handshake message over 64 KiB) and queued
            // no alert.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Failure::Unreadable(e.to_string(), AlertType::DecodeError))
            }
            Err(e) if e.kind() == io::ErrorKind::Other => {
                return Err(Failure::Unreadable(
                    e.to_string(),
                    AlertType::IllegalParameter,
                ))
            }
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// Reports a failed handshake and closes the connection.
fn fail(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    deadline: HandshakeDeadline,
    failure: Failure,
) {
    let (error, text) = match failure {
        Failure::Timeout => (
            SocketError::SocketTimeout,
            format!(
                "the TLS handshake did not complete within {} ms",
                deadline.timeout_ms
            ),
        ),
        Failure::PeerClosed => (
            SocketError::RemoteHostClosed,
            "the client closed the connection during the TLS handshake".to_string(),
        ),
        Failure::NotTls(byte) => (
            SocketError::SslHandshakeFailed,
            format!(
                "the client did not start a TLS handshake (first byte 0x{byte:02x} is not a \
                 TLS handshake record; plaintext?)"
            ),
        ),
        Failure::Io(err) => match err.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => (
                SocketError::RemoteHostClosed,
                format!("the client reset the connection: {}", os_reason(&err)),
            ),
            _ => (
                SocketError::SslHandshakeFailed,
                format!("the TLS handshake failed: {}", os_reason(&err)),
            ),
        },
        Failure::Internal(text) | Failure::Unreadable(text, _) => {
            (SocketError::SslHandshakeFailed, text)
        }
        Failure::Tls(err, alert) => {
            reject(connection, tls, events, &err, alert);
            (
                SocketError::SslHandshakeFailed,
                format!("the TLS handshake failed: {err}"),
            )
        }
        Failure::Refused(err, alert) => {
            send_alert(connection, events, &err, alert);
            (
                SocketError::SslHandshakeFailed,
                format!("the TLS handshake failed: {err}"),
            )
        }
    };
    report_failure(connection, events, error, text);
}

/// Closes a connection whose handshake failed and reports why.
fn report_failure(
    connection: &Arc<Connection>,
    events: &EventSink,
    error: SocketError,
    text: String,
) {
    connection.set_error(error, text.clone());
    connection.abort();
    events.emit(EventKind::ErrorOccurred, || {
        Event::new(EventKind::ErrorOccurred, Some(connection))
            .socket_error(error)
            .describe(text)
    });
}

/// The events and the alert of a handshake rustls refused.
fn reject(
    connection: &Arc<Connection>,
    tls: &ServerTls,
    events: &EventSink,
    err: &rustls::Error,
    alert: Option<FatalAlert>,
) {
    match err {
        rustls::Error::AlertReceived(description) => {
            let alert_type = AlertType::from_wire(u8::from(*description));
            events.emit(EventKind::AlertReceived, || {
                Event::new(EventKind::AlertReceived, Some(connection))
                    .alert(AlertLevel::Fatal, alert_type)
                    .describe(format!("the client sent a fatal alert: {description:?}"))
            });
        }
        // rustls refused a missing certificate itself, before any verifier
        // call could report it.
        rustls::Error::NoCertificatesPresented => {
            if let Some(policy) = tls.client_auth() {
                let errors = [SslError::new(SslErrorCode::NoPeerCertificate, None)];
                verify::report_errors(policy, connection, events, &errors);
            }
        }
        _ => {}
    }
    send_alert(connection, events, err, alert);
}

/// Sends the fatal alert of a refused handshake (if one can go out),
/// reports it, and closes.
fn send_alert(
    connection: &Arc<Connection>,
    events: &EventSink,
    err: &rustls::Error,
    alert: Option<FatalAlert>,
) {
    let Some(FatalAlert {
        bytes,
        alert: alert_type,
    }) = alert
    else {
        return linger_close(connection);
    };
    // The alert (with what rustls queued before it), never a close_notify.
    send_alert_bytes(connection, &bytes);
    events.emit(EventKind::AlertSent, || {
        Event::new(EventKind::AlertSent, Some(connection))
            .alert(AlertLevel::Fatal, alert_type)
            .describe(format!("sent a fatal alert: {alert_type:?} ({err})"))
    });
    linger_close(connection);
}

/// Sends the bytes of a fatal alert, waiting at most `ALERT_LINGER` for the
/// peer to take them: a peer that stops reading cannot hold the thread.
pub(crate) fn send_alert_bytes(connection: &Connection, bytes: &[u8]) {
    let _ = connection.stream().set_write_timeout(Some(ALERT_LINGER));
    let _ = connection.stream().write_all(bytes);
}

/// Shuts down writing, then reads briefly so the client's unread bytes do
/// not make the kernel reset the connection and destroy the alert in flight.
fn linger_close(connection: &Connection) {
    let stream = connection.stream();
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + ALERT_LINGER;
    let mut sink = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&mut &*stream).read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// The alert rustls sends for an error, for alerts sent encrypted.
fn alert_for(err: &rustls::Error) -> AlertType {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert_err) => {
            AlertType::from_wire(u8::from(rustls::AlertDescription::from(cert_err.clone())))
        }
        E::NoCertificatesPresented => AlertType::CertificateRequired,
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            AlertType::UnexpectedMessage
        }
        E::InvalidMessage(_) => AlertType::DecodeError,
        E::DecryptError => AlertType::BadRecordMac,
        E::NoApplicationProtocol => AlertType::NoApplicationProtocol,
        E::PeerMisbehaved(_) => AlertType::IllegalParameter,
        _ => AlertType::HandshakeFailure,
    }
}

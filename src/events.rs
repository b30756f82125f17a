//! Events: Qt's signals as callbacks. The core describes each event as an
//! [`Event`]; whoever registered a [`Callback`] for its kind receives it on the
//! library thread where it happened, with no library lock held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use crate::connection::Connection;
use crate::types::{AlertLevel, AlertType, EventKind, SocketError, SslErrorCode};

/// One certificate verification error (`QSslError`).
#[derive(Clone, Debug)]
pub struct SslError {
    pub code: SslErrorCode,
    pub message: String,
    /// The certificate concerned, if any.
    pub certificate: Option<CertificateDer<'static>>,
}

impl SslError {
    pub fn new(code: SslErrorCode, certificate: Option<CertificateDer<'static>>) -> Self {
        SslError {
            code,
            message: code.description().to_string(),
            certificate,
        }
    }
}

/// One event, valid for the duration of the callback.
#[derive(Debug)]
pub struct Event<'a> {
    pub kind: EventKind,
    /// The connection concerned; `None` only for `AcceptError`.
    pub connection: Option<&'a Arc<Connection>>,
    pub socket_error: SocketError,
    pub ssl_errors: &'a [SslError],
    pub alert: Option<(AlertLevel, AlertType)>,
    pub description: String,
}

impl<'a> Event<'a> {
    pub(crate) fn new(kind: EventKind, connection: Option<&'a Arc<Connection>>) -> Self {
        Event {
            kind,
            connection,
            socket_error: SocketError::Unknown,
            ssl_errors: &[],
            alert: None,
            description: String::new(),
        }
    }

    pub(crate) fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub(crate) fn socket_error(mut self, error: SocketError) -> Self {
        self.socket_error = error;
        self
    }

    pub(crate) fn ssl_errors(mut self, errors: &'a [SslError]) -> Self {
        self.ssl_errors = errors;
        self
    }

    pub(crate) fn alert(mut self, level: AlertLevel, alert: AlertType) -> Self {
        self.alert = Some((level, alert));
        self
    }
}

/// A registered callback.
pub type Callback = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// One callback slot per event kind.
#[derive(Default)]
pub(crate) struct Callbacks {
    table: Mutex<[Option<Callback>; EventKind::COUNT]>,
}

impl Callbacks {
    pub(crate) fn set(&self, kind: EventKind, callback: Option<Callback>) {
        self.table.lock()[kind as usize] = callback;
    }

    fn get(&self, kind: EventKind) -> Option<Callback> {
        self.table.lock()[kind as usize].clone()
    }
}

/// Delivers the events of one listening session, and none once that session
/// is closing: after `sslserver_close` returns no callback runs.
#[derive(Clone)]
pub(crate) struct EventSink {
    callbacks: Arc<Callbacks>,
    closing: Arc<AtomicBool>,
}

impl EventSink {
    pub(crate) fn new(callbacks: Arc<Callbacks>, closing: Arc<AtomicBool>) -> Self {
        EventSink { callbacks, closing }
    }

    /// Calls the callback for `kind`, if one is registered, with the event
    /// `build` makes; `build` is not run when nobody listens.
    pub(crate) fn emit<'a>(&self, kind: EventKind, build: impl FnOnce() -> Event<'a>) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        if let Some(callback) = self.callbacks.get(kind) {
            let event = build();
            debug_assert_eq!(event.kind, kind);
            callback(&event);
        }
    }
}

//! `sslserver_event` and callbacks: the C view of [`crate::events::Event`].

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::{call_or, RawEventKind};
use crate::config::SslErrorsCallback;
use crate::connection::Connection;
use crate::events::{Callback, Event, SslError};
use crate::types::{AlertLevel, AlertType, EventKind, SocketError, SslErrorCode};

/// One certificate verification error (QSslError).
#[repr(C)]
pub struct sslserver_ssl_error {
    pub code: SslErrorCode,
    /// Human-readable text; valid during the callback.
    pub message: *const c_char,
    /// The certificate concerned (DER), or NULL.
    pub certificate_der: *const u8,
    pub certificate_der_len: usize,
}

/// An event, valid during the callback only.
#[repr(C)]
pub struct sslserver_event {
    pub kind: EventKind,
    /// Borrowed, valid during the callback; set for every connection event
    /// (NEW_CONNECTION included), NULL only for ACCEPT_ERROR. Do not free it.
    pub socket: *mut Connection,
    /// ERROR_OCCURRED, ACCEPT_ERROR (UNKNOWN otherwise).
    pub socket_error: SocketError,
    /// PEER_VERIFY_ERROR and HANDSHAKE_INTERRUPTED_ON_ERROR: 1; SSL_ERRORS: n.
    pub ssl_errors: *const sslserver_ssl_error,
    pub ssl_error_count: usize,
    /// ALERT_SENT, ALERT_RECEIVED; otherwise SSLSERVER_ALERT_UNKNOWN and
    /// SSLSERVER_ALERT_UNKNOWN_ALERT_MESSAGE.
    pub alert_level: AlertLevel,
    pub alert_type: AlertType,
    /// Human-readable text for the event, never NULL.
    pub description: *const c_char,
}

/// An event callback.
pub type sslserver_callback =
    Option<unsafe extern "C" fn(event: *const sslserver_event, userdata: *mut c_void)>;

/// A C function and its userdata.
struct CCallback {
    function: unsafe extern "C" fn(*const sslserver_event, *mut c_void),
    userdata: *mut c_void,
}

// SAFETY: the C contract (sslserver_register_callback) says callbacks run on
// the library's threads; the application registers only userdata that may be
// used from them. The library never dereferences it.
unsafe impl Send for CCallback {}
// SAFETY: as above; the library only passes the pointer along.
unsafe impl Sync for CCallback {}

/// Certificate errors as C sees them; the pointers live as long as this value.
struct CErrors {
    _messages: Vec<CString>,
    items: Vec<sslserver_ssl_error>,
}

impl CErrors {
    fn new(errors: &[SslError]) -> Self {
        let messages: Vec<CString> = errors.iter().map(|e| c_string(&e.message)).collect();
        let items = errors
            .iter()
            .zip(&messages)
            .map(|(error, message)| sslserver_ssl_error {
                code: error.code,
                message: message.as_ptr(),
                certificate_der: error
                    .certificate
                    .as_ref()
                    .map_or(std::ptr::null(), |c| c.as_ptr()),
                certificate_der_len: error.certificate.as_ref().map_or(0, |c| c.len()),
            })
            .collect();
        CErrors {
            _messages: messages,
            items,
        }
    }

    fn as_ptr(&self) -> *const sslserver_ssl_error {
        if self.items.is_empty() {
            std::ptr::null()
        } else {
            self.items.as_ptr()
        }
    }
}

impl CCallback {
    fn deliver(&self, event: &Event<'_>) {
        let description = c_string(&event.description);
        let errors = CErrors::new(event.ssl_errors);
        let (alert_level, alert_type) = event
            .alert
            .unwrap_or((AlertLevel::Unknown, AlertType::UnknownAlertMessage));
        let c_event = sslserver_event {
            kind: event.kind,
            socket: event
                .connection
                .map_or(std::ptr::null_mut(), |c| Arc::as_ptr(c).cast_mut()),
            socket_error: event.socket_error,
            ssl_errors: errors.as_ptr(),
            ssl_error_count: errors.items.len(),
            alert_level,
            alert_type,
            description: description.as_ptr(),
        };
        // SAFETY: `function` is the application's callback; the event and
        // everything it points to (strings, errors, the Arc behind `socket`,
        // which the caller of deliver holds) outlive the call.
        unsafe { (self.function)(&c_event, self.userdata) }
    }
}

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

/// The core callback for a C function pointer (NULL removes it).
pub(crate) fn callback_for(cb: sslserver_callback, userdata: *mut c_void) -> Option<Callback> {
    let c_callback = CCallback {
        function: cb?,
        userdata,
    };
    Some(Arc::new(move |event: &Event<'_>| c_callback.deliver(event)))
}

/// Client mode: decides whether to go on despite the server certificate's
/// errors (`count` >= 1). Return true to accept the certificate. Runs on the
/// thread calling sslsocket_connect_encrypted, during the call.
pub type sslconfig_ssl_errors_callback = Option<
    unsafe extern "C" fn(
        errors: *const sslserver_ssl_error,
        count: usize,
        userdata: *mut c_void,
    ) -> bool,
>;

struct CErrorsCallback {
    function: unsafe extern "C" fn(*const sslserver_ssl_error, usize, *mut c_void) -> bool,
    userdata: *mut c_void,
}

// SAFETY: as for CCallback: the application registers userdata usable from
// the thread that connects; the library only passes the pointer along.
unsafe impl Send for CErrorsCallback {}
// SAFETY: as above.
unsafe impl Sync for CErrorsCallback {}

/// The core decision callback for a C function pointer (NULL removes it).
pub(crate) fn errors_callback_for(
    cb: sslconfig_ssl_errors_callback,
    userdata: *mut c_void,
) -> Option<SslErrorsCallback> {
    let c_callback = CErrorsCallback {
        function: cb?,
        userdata,
    };
    Some(Arc::new(move |errors: &[SslError]| {
        c_callback.decide(errors)
    }))
}

impl CErrorsCallback {
    fn decide(&self, errors: &[SslError]) -> bool {
        let c_errors = CErrors::new(errors);
        // SAFETY: the application's callback; the array and its strings
        // outlive the call.
        unsafe { (self.function)(c_errors.as_ptr(), c_errors.items.len(), self.userdata) }
    }
}

/// The name of an event kind, e.g. "NEW_CONNECTION"; never NULL.
#[no_mangle]
pub extern "C" fn sslserver_event_kind_name(kind: RawEventKind) -> *const c_char {
    call_or(super::static_text("unknown\0"), || {
        super::name_text(EventKind::from_raw(kind).map(EventKind::name))
    })
}

//! The C API. This layer only checks arguments, converts handles, catches
//! panics and turns results into codes; the logic lives in the safe modules
//! above it. Every `unsafe` block of the library is in this module, each with
//! the reason it is sound.
//!
//! Handles: `sslconfig` is a `Box`; `sslserver` and `sslsocket` are `Arc`s,
//! and every call on them holds its own reference for its duration. To wake
//! a thread blocked on a handle, call sslsocket_abort or sslserver_close from
//! another thread; free a handle only when no other thread is inside a call
//! on it (abort/close wake, then join, then free).

#![allow(non_camel_case_types)]
// These functions are for C callers, for whom `unsafe fn` means nothing; the
// pointer contract of each is in its documentation, and every dereference
// sits in an `unsafe` block that states why it holds.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod config;
pub mod dtls;
pub mod events;
pub mod server;
pub mod socket;
pub mod upgrade;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::types::{Protocol, SocketError, SslErrorCode};

/// The result of every fallible call; 0 is success.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sslserver_result {
    SSLSERVER_OK = 0,
    /// NULL, a bad enum value, bad UTF-8 or a value out of range.
    SSLSERVER_ERROR_INVALID_ARGUMENT,
    /// The call does not fit the object's state (e.g. listen while listening).
    SSLSERVER_ERROR_INVALID_STATE,
    /// Not available with this TLS engine or build.
    SSLSERVER_ERROR_UNSUPPORTED,
    /// File or socket I/O failed (see sslserver_last_error_message).
    SSLSERVER_ERROR_IO,
    /// A missing or unparsable certificate (chain).
    SSLSERVER_ERROR_CERTIFICATE,
    /// A missing, unparsable, encrypted-without-passphrase or mismatched key.
    SSLSERVER_ERROR_PRIVATE_KEY,
    SSLSERVER_ERROR_ADDRESS_IN_USE,
    SSLSERVER_ERROR_ADDRESS_NOT_AVAILABLE,
    SSLSERVER_ERROR_TIMEOUT,
    /// The connection or server is already closed.
    SSLSERVER_ERROR_CLOSED,
    /// A TLS protocol failure on a connection.
    SSLSERVER_ERROR_TLS,
    /// The output buffer is too small; the size needed is in `*out_n`.
    SSLSERVER_ERROR_BUFFER_TOO_SMALL,
    /// An internal error (a bug in the library) was caught at the boundary.
    SSLSERVER_ERROR_PANIC,
    /// A non-blocking socket (sslsocket_set_blocking) could do nothing
    /// without waiting: poll its descriptor and call again.
    SSLSERVER_ERROR_WOULD_BLOCK,
}

use sslserver_result::*;

/// An `sslserver_result` as C passes it.
pub type RawResult = c_int;
/// An `sslserver_peer_verify_mode` as C passes it (any int, checked on use).
pub type RawPeerVerifyMode = c_int;
/// An `sslserver_protocol` as C passes it.
pub type RawProtocol = c_int;
/// An `sslserver_event_kind` as C passes it.
pub type RawEventKind = c_int;
/// An `sslserver_socket_error` as C passes it.
pub type RawSocketError = c_int;
/// An `sslserver_ssl_error_code` as C passes it.
pub type RawSslErrorCode = c_int;
/// An `sslserver_proxy_protocol` as C passes it.
pub type RawProxyProtocol = c_int;

/// A failed call: its code and the message for `sslserver_last_error_message`.
pub(crate) struct Failure {
    code: sslserver_result,
    message: String,
}

impl Failure {
    pub(crate) fn new(code: sslserver_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn null(name: &str) -> Self {
        Self::new(
            SSLSERVER_ERROR_INVALID_ARGUMENT,
            format!("{name} must not be NULL"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(SSLSERVER_ERROR_INVALID_ARGUMENT, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidArgument => SSLSERVER_ERROR_INVALID_ARGUMENT,
            ErrorKind::InvalidState => SSLSERVER_ERROR_INVALID_STATE,
            ErrorKind::Unsupported => SSLSERVER_ERROR_UNSUPPORTED,
            ErrorKind::Io => SSLSERVER_ERROR_IO,
            ErrorKind::Certificate => SSLSERVER_ERROR_CERTIFICATE,
            ErrorKind::PrivateKey => SSLSERVER_ERROR_PRIVATE_KEY,
            ErrorKind::AddressInUse => SSLSERVER_ERROR_ADDRESS_IN_USE,
            ErrorKind::AddressNotAvailable => SSLSERVER_ERROR_ADDRESS_NOT_AVAILABLE,
            ErrorKind::Timeout => SSLSERVER_ERROR_TIMEOUT,
            ErrorKind::Closed => SSLSERVER_ERROR_CLOSED,
            ErrorKind::Tls => SSLSERVER_ERROR_TLS,
            ErrorKind::WouldBlock => SSLSERVER_ERROR_WOULD_BLOCK,
        };
        Failure::new(code, e.message())
    }
}

pub(crate) type CallResult = Result<(), Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|cell| *cell.borrow_mut() = text);
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_string());
    format!("internal error in libsslserver (please report it): {detail}")
}

/// Runs a fallible call behind the panic boundary.
pub(crate) fn call(body: impl FnOnce() -> CallResult) -> sslserver_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SSLSERVER_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(&panic_text(payload.as_ref()));
            SSLSERVER_ERROR_PANIC
        }
    }
}

/// Runs an infallible call (getter, setter, constructor) behind the panic
/// boundary; a panic gives `fallback`.
pub(crate) fn call_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&panic_text(payload.as_ref()));
            fallback
        }
    }
}

/// A new reference to an `Arc` handle, or `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or came from `Arc::into_raw` / `Arc::as_ptr` of a live `Arc<T>`.
pub(crate) unsafe fn share<T>(ptr: *const T) -> Option<Arc<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per this function's contract the Arc is live, so its count is >= 1.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}

/// Runs `body` with a reference to the `Arc` handle behind `ptr` (a server,
/// a DTLS server or a socket), held for the whole call, so that freeing the
/// handle on another thread cannot free it under the call. `name` is the C
/// parameter's name, for the NULL error.
pub(crate) fn with_handle<T>(
    ptr: *const T,
    name: &str,
    body: impl FnOnce(&T) -> CallResult,
) -> sslserver_result {
    call(|| {
        // SAFETY: the C caller passes NULL or a live handle of this type, as
        // the header documents for every handle parameter.
        let handle = unsafe { share(ptr) }.ok_or_else(|| Failure::null(name))?;
        body(&handle)
    })
}

/// A getter's value through an `Arc` handle, `fallback` for NULL.
pub(crate) fn read_handle<T, R: Copy>(ptr: *const T, fallback: R, body: impl FnOnce(&T) -> R) -> R {
    call_or(fallback, || {
        // SAFETY: the C caller passes NULL or a live handle of this type.
        unsafe { share(ptr) }.map_or(fallback, |handle| body(&handle))
    })
}

/// A string argument: `None` for NULL; bad UTF-8 is an error.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map(Some)
        .map_err(|_| Failure::invalid(format!("{name} is not valid UTF-8")))
}

/// A required string argument.
///
/// # Safety
/// As for [`text`].
pub(crate) unsafe fn required_text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded contract.
    unsafe { text(ptr, name) }?.ok_or_else(|| Failure::null(name))
}

/// A byte-buffer argument; NULL is allowed only with length 0.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that outlive `'a`.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::null(name))
        };
    }
    // No object is larger than isize::MAX bytes: such a length is a bug
    // (often a negative value converted), not a buffer.
    if isize::try_from(len).is_err() {
        return Err(Failure::invalid(format!(
            "{name}: length {len} is too large"
        )));
    }
    // SAFETY: per this function's contract; the length is a possible size.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The byte size of `count` elements of `T`; a count whose size would wrap
/// around is refused before any memory is viewed.
pub(crate) fn array_size<T>(count: usize, name: &str) -> Result<usize, Failure> {
    count
        .checked_mul(size_of::<T>())
        .filter(|&size| size <= isize::MAX as usize)
        .ok_or_else(|| Failure::invalid(format!("{name}: count {count} is too large")))
}

/// An array of strings (`names`, `count`); NULL is allowed with count 0.
///
/// # Safety
/// `ptr` is NULL or points to `count` pointers, each as for [`text`].
pub(crate) unsafe fn text_array(
    ptr: *const *const c_char,
    count: usize,
    name: &str,
) -> Result<Vec<String>, Failure> {
    let size = array_size::<*const c_char>(count, name)?;
    // SAFETY: per this function's contract the array holds `count` pointers.
    let pointers = unsafe { bytes(ptr.cast::<u8>(), size, name) }?;
    let pointers: &[*const c_char] = if pointers.is_empty() {
        &[]
    } else {
        // SAFETY: the same memory, viewed as the pointers it holds.
        unsafe { std::slice::from_raw_parts(ptr, count) }
    };
    pointers
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            // SAFETY: each element is a NUL-terminated string per the contract.
            unsafe { required_text(p, &format!("{name}[{i}]")) }.map(str::to_string)
        })
        .collect()
}

/// Writes an output value.
///
/// # Safety
/// `ptr` is NULL or valid for writing a `T`.
pub(crate) unsafe fn put<T>(ptr: *mut T, value: T, name: &str) -> CallResult {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: per this function's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Copies `value` into a caller buffer per the string-out convention.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes; `out_n` is NULL or valid
/// for writing a `size_t`.
pub(crate) unsafe fn copy_out(
    value: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> CallResult {
    if out_n.is_null() {
        return Err(Failure::null("out_n"));
    }
    if buf.is_null() && len > 0 {
        return Err(Failure::null("buf"));
    }
    let needed = value.len();
    if needed + 1 > len {
        // SAFETY: out_n checked above and valid per the contract.
        unsafe { out_n.write(needed) };
        return Err(Failure::new(
            SSLSERVER_ERROR_BUFFER_TOO_SMALL,
            format!("the buffer holds {len} bytes; {} are needed", needed + 1),
        ));
    }
    // SAFETY: buf holds len >= needed + 1 bytes per the contract; the source
    // is a distinct Rust string.
    unsafe {
        std::ptr::copy_nonoverlapping(value.as_ptr(), buf.cast::<u8>(), needed);
        buf.add(needed).write(0);
        out_n.write(needed);
    }
    Ok(())
}

/// A `'static` C string from a literal that ends in NUL.
fn static_text(text: &'static str) -> *const c_char {
    debug_assert!(text.ends_with('\0'));
    text.as_ptr().cast()
}

/// Static text for a result code (e.g. "invalid argument"); never NULL.
#[no_mangle]
pub extern "C" fn sslserver_result_string(r: RawResult) -> *const c_char {
    let all: [(sslserver_result, &str); 15] = [
        (SSLSERVER_OK, "success\0"),
        (SSLSERVER_ERROR_INVALID_ARGUMENT, "invalid argument\0"),
        (
            SSLSERVER_ERROR_INVALID_STATE,
            "invalid state for this call\0",
        ),
        (
            SSLSERVER_ERROR_UNSUPPORTED,
            "not supported by this TLS engine or build\0",
        ),
        (SSLSERVER_ERROR_IO, "I/O error\0"),
        (SSLSERVER_ERROR_CERTIFICATE, "certificate error\0"),
        (SSLSERVER_ERROR_PRIVATE_KEY, "private key error\0"),
        (SSLSERVER_ERROR_ADDRESS_IN_USE, "address already in use\0"),
        (
            SSLSERVER_ERROR_ADDRESS_NOT_AVAILABLE,
            "address not available\0",
        ),
        (SSLSERVER_ERROR_TIMEOUT, "timed out\0"),
        (SSLSERVER_ERROR_CLOSED, "closed\0"),
        (SSLSERVER_ERROR_TLS, "TLS protocol error\0"),
        (SSLSERVER_ERROR_BUFFER_TOO_SMALL, "buffer too small\0"),
        (SSLSERVER_ERROR_PANIC, "internal error (panic)\0"),
        (
            SSLSERVER_ERROR_WOULD_BLOCK,
            "the operation would block (non-blocking socket)\0",
        ),
    ];
    let text = all
        .iter()
        .find(|(code, _)| *code as c_int == r)
        .map_or("unknown result code\0", |(_, text)| text);
    static_text(text)
}

/// The detail of the last failed call made on this thread, e.g.
/// "private key does not match the certificate". Never NULL (empty when no
/// call has failed). Valid until the next call on the same thread.
#[no_mangle]
pub extern "C" fn sslserver_last_error_message() -> *const c_char {
    call_or(static_text("\0"), || {
        LAST_ERROR.with(|cell| cell.borrow().as_ptr())
    })
}

/// The library's version, e.g. "0.1.0"; also `SSLSERVER_VERSION` in this header.
#[no_mangle]
pub extern "C" fn sslserver_version() -> *const c_char {
    static_text(concat!(env!("CARGO_PKG_VERSION"), "\0"))
}

/// Qt's name of a socket error, e.g. "SocketTimeoutError"; never NULL.
#[no_mangle]
pub extern "C" fn sslserver_socket_error_name(error: RawSocketError) -> *const c_char {
    name_text(SocketError::from_raw(error).map(SocketError::name))
}

/// Qt's name of a certificate error code, e.g. "SelfSignedCertificate";
/// never NULL.
#[no_mangle]
pub extern "C" fn sslserver_ssl_error_code_name(code: RawSslErrorCode) -> *const c_char {
    name_text(SslErrorCode::from_raw(code).map(SslErrorCode::name))
}

/// The name of a protocol version, e.g. "TLSv1.3"; never NULL.
#[no_mangle]
pub extern "C" fn sslserver_protocol_name(protocol: RawProtocol) -> *const c_char {
    name_text(Protocol::from_raw(protocol).map(Protocol::name))
}

/// Names are static and NUL-free; cache their C forms once.
fn name_text(name: Option<&'static str>) -> *const c_char {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<&'static str, CString>>> = OnceLock::new();
    let Some(name) = name else {
        return static_text("unknown\0");
    };
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(name)
        .or_insert_with(|| CString::new(name).unwrap_or_default())
        .as_ptr()
}

//! The enumerations of the C contract. Those that mirror Qt keep Qt's numeric
//! values, so code ported from Qt maps one to one; the C names come from
//! cbindgen (see `cbindgen.toml`).

/// Why a socket failed: `QAbstractSocket::SocketError`, same numbers.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketError {
    Unknown = -1,
    ConnectionRefused = 0,
    RemoteHostClosed = 1,
    HostNotFound = 2,
    SocketAccess = 3,
    SocketResource = 4,
    SocketTimeout = 5,
    DatagramTooLarge = 6,
    Network = 7,
    AddressInUse = 8,
    SocketAddressNotAvailable = 9,
    UnsupportedSocketOperation = 10,
    UnfinishedSocketOperation = 11,
    ProxyAuthenticationRequired = 12,
    SslHandshakeFailed = 13,
    ProxyConnectionRefused = 14,
    ProxyConnectionClosed = 15,
    ProxyConnectionTimeout = 16,
    ProxyNotFound = 17,
    ProxyProtocol = 18,
    Operation = 19,
    SslInternal = 20,
    SslInvalidUserData = 21,
    Temporary = 22,
}

impl SocketError {
    pub fn from_raw(raw: i32) -> Option<Self> {
        use SocketError::*;
        const ALL: [SocketError; 24] = [
            Unknown,
            ConnectionRefused,
            RemoteHostClosed,
            HostNotFound,
            SocketAccess,
            SocketResource,
            SocketTimeout,
            DatagramTooLarge,
            Network,
            AddressInUse,
            SocketAddressNotAvailable,
            UnsupportedSocketOperation,
            UnfinishedSocketOperation,
            ProxyAuthenticationRequired,
            SslHandshakeFailed,
            ProxyConnectionRefused,
            ProxyConnectionClosed,
            ProxyConnectionTimeout,
            ProxyNotFound,
            ProxyProtocol,
            Operation,
            SslInternal,
            SslInvalidUserData,
            Temporary,
        ];
        ALL.into_iter().find(|e| *e as i32 == raw)
    }

    /// Qt's enumerator name, e.g. `SocketTimeoutError`.
    pub fn name(self) -> &'static str {
        use SocketError::*;
        match self {
            Unknown => "UnknownSocketError",
            ConnectionRefused => "ConnectionRefusedError",
            RemoteHostClosed => "RemoteHostClosedError",
            HostNotFound => "HostNotFoundError",
            SocketAccess => "SocketAccessError",
            SocketResource => "SocketResourceError",
            SocketTimeout => "SocketTimeoutError",
            DatagramTooLarge => "DatagramTooLargeError",
            Network => "NetworkError",
            AddressInUse => "AddressInUseError",
            SocketAddressNotAvailable => "SocketAddressNotAvailableError",
            UnsupportedSocketOperation => "UnsupportedSocketOperationError",
            UnfinishedSocketOperation => "UnfinishedSocketOperationError",
            ProxyAuthenticationRequired => "ProxyAuthenticationRequiredError",
            SslHandshakeFailed => "SslHandshakeFailedError",
            ProxyConnectionRefused => "ProxyConnectionRefusedError",
            ProxyConnectionClosed => "ProxyConnectionClosedError",
            ProxyConnectionTimeout => "ProxyConnectionTimeoutError",
            ProxyNotFound => "ProxyNotFoundError",
            ProxyProtocol => "ProxyProtocolError",
            Operation => "OperationError",
            SslInternal => "SslInternalError",
            SslInvalidUserData => "SslInvalidUserDataError",
            Temporary => "TemporaryError",
        }
    }
}

/// A certificate verification error: `QSslError::SslError`, same numbers.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SslErrorCode {
    Unspecified = -1,
    None = 0,
    UnableToGetIssuerCertificate = 1,
    UnableToDecryptCertificateSignature = 2,
    UnableToDecodeIssuerPublicKey = 3,
    CertificateSignatureFailed = 4,
    CertificateNotYetValid = 5,
    CertificateExpired = 6,
    InvalidNotBeforeField = 7,
    InvalidNotAfterField = 8,
    SelfSignedCertificate = 9,
    SelfSignedCertificateInChain = 10,
    UnableToGetLocalIssuerCertificate = 11,
    UnableToVerifyFirstCertificate = 12,
    CertificateRevoked = 13,
    InvalidCaCertificate = 14,
    PathLengthExceeded = 15,
    InvalidPurpose = 16,
    CertificateUntrusted = 17,
    CertificateRejected = 18,
    SubjectIssuerMismatch = 19,
    AuthorityIssuerSerialNumberMismatch = 20,
    NoPeerCertificate = 21,
    HostNameMismatch = 22,
    NoSslSupport = 23,
    CertificateBlacklisted = 24,
    CertificateStatusUnknown = 25,
}

impl SslErrorCode {
    pub fn from_raw(raw: i32) -> Option<Self> {
        use SslErrorCode::*;
        const ALL: [SslErrorCode; 27] = [
            Unspecified,
            None,
            UnableToGetIssuerCertificate,
            UnableToDecryptCertificateSignature,
            UnableToDecodeIssuerPublicKey,
            CertificateSignatureFailed,
            CertificateNotYetValid,
            CertificateExpired,
            InvalidNotBeforeField,
            InvalidNotAfterField,
            SelfSignedCertificate,
            SelfSignedCertificateInChain,
            UnableToGetLocalIssuerCertificate,
            UnableToVerifyFirstCertificate,
            CertificateRevoked,
            InvalidCaCertificate,
            PathLengthExceeded,
            InvalidPurpose,
            CertificateUntrusted,
            CertificateRejected,
            SubjectIssuerMismatch,
            AuthorityIssuerSerialNumberMismatch,
            NoPeerCertificate,
            HostNameMismatch,
            NoSslSupport,
            CertificateBlacklisted,
            CertificateStatusUnknown,
        ];
        ALL.into_iter().find(|e| *e as i32 == raw)
    }

    /// Qt's enumerator name, e.g. `SelfSignedCertificate`.
    pub fn name(self) -> &'static str {
        use SslErrorCode::*;
        match self {
            Unspecified => "UnspecifiedError",
            None => "NoError",
            UnableToGetIssuerCertificate => "UnableToGetIssuerCertificate",
            UnableToDecryptCertificateSignature => "UnableToDecryptCertificateSignature",
            UnableToDecodeIssuerPublicKey => "UnableToDecodeIssuerPublicKey",
            CertificateSignatureFailed => "CertificateSignatureFailed",
            CertificateNotYetValid => "CertificateNotYetValid",
            CertificateExpired => "CertificateExpired",
            InvalidNotBeforeField => "InvalidNotBeforeField",
            InvalidNotAfterField => "InvalidNotAfterField",
            SelfSignedCertificate => "SelfSignedCertificate",
            SelfSignedCertificateInChain => "SelfSignedCertificateInChain",
            UnableToGetLocalIssuerCertificate => "UnableToGetLocalIssuerCertificate",
            UnableToVerifyFirstCertificate => "UnableToVerifyFirstCertificate",
            CertificateRevoked => "CertificateRevoked",
            InvalidCaCertificate => "InvalidCaCertificate",
            PathLengthExceeded => "PathLengthExceeded",
            InvalidPurpose => "InvalidPurpose",
            CertificateUntrusted => "CertificateUntrusted",
            CertificateRejected => "CertificateRejected",
            SubjectIssuerMismatch => "SubjectIssuerMismatch",
            AuthorityIssuerSerialNumberMismatch => "AuthorityIssuerSerialNumberMismatch",
            NoPeerCertificate => "NoPeerCertificate",
            HostNameMismatch => "HostNameMismatch",
            NoSslSupport => "NoSslSupport",
            CertificateBlacklisted => "CertificateBlacklisted",
            CertificateStatusUnknown => "CertificateStatusUnknown",
        }
    }

    /// A sentence describing the error, in the spirit of `QSslError::errorString`.
    pub fn description(self) -> &'static str {
        use SslErrorCode::*;
        match self {
            Unspecified => "An unknown error occurred while verifying the certificate",
            None => "No error",
            UnableToGetIssuerCertificate => "The issuer certificate could not be found",
            UnableToDecryptCertificateSignature => "The certificate signature could not be decrypted",
            UnableToDecodeIssuerPublicKey => "The public key in the certificate could not be read",
            CertificateSignatureFailed => "The signature of the certificate is invalid",
            CertificateNotYetValid => "The certificate is not yet valid",
            CertificateExpired => "The certificate has expired",
            InvalidNotBeforeField => "The certificate's notBefore field contains an invalid time",
            InvalidNotAfterField => "The certificate's notAfter field contains an invalid time",
            SelfSignedCertificate => "The certificate is self-signed, and untrusted",
            SelfSignedCertificateInChain => {
                "The root certificate of the certificate chain is self-signed, and untrusted"
            }
            UnableToGetLocalIssuerCertificate => {
                "The issuer certificate of a locally looked up certificate could not be found"
            }
            UnableToVerifyFirstCertificate => "No certificates could be verified",
            CertificateRevoked => "The certificate has been revoked",
            InvalidCaCertificate => "One of the CA certificates is invalid",
            PathLengthExceeded => "The basicConstraints path length parameter has been exceeded",
            InvalidPurpose => "The supplied certificate is unsuitable for this purpose",
            CertificateUntrusted => "The root CA certificate is not trusted for this purpose",
            CertificateRejected => "The root CA certificate is marked to reject the specified purpose",
            SubjectIssuerMismatch => {
                "The current candidate issuer certificate was rejected because its subject name did not match the issuer name of the current certificate"
            }
            AuthorityIssuerSerialNumberMismatch => {
                "The current candidate issuer certificate was rejected because its issuer name and serial number did not match the authority key identifier of the current certificate"
            }
            NoPeerCertificate => "The peer did not present any certificate",
            HostNameMismatch => "The host name did not match any of the valid hosts for this certificate",
            NoSslSupport => "TLS is not supported by this build",
            CertificateBlacklisted => "The peer certificate is blacklisted",
            CertificateStatusUnknown => "The certificate's revocation status is unknown",
        }
    }
}

/// How a server treats client certificates: `QSslSocket::PeerVerifyMode`.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerVerifyMode {
    /// Do not request a client certificate.
    VerifyNone = 0,
    /// Request a certificate; report its problems but accept it anyway.
    QueryPeer = 1,
    /// Require a valid certificate; problems fail the handshake unless ignored.
    VerifyPeer = 2,
    /// QUERY_PEER on a server (the default).
    AutoVerifyPeer = 3,
}

impl PeerVerifyMode {
    pub fn from_raw(raw: i32) -> Option<Self> {
        use PeerVerifyMode::*;
        [VerifyNone, QueryPeer, VerifyPeer, AutoVerifyPeer]
            .into_iter()
            .find(|m| *m as i32 == raw)
    }
}

/// TLS protocol versions: `QSsl::SslProtocol`, same numbers.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Unknown = -1,
    TlsV1_0 = 0,
    TlsV1_1 = 1,
    TlsV1_2 = 2,
    Any = 3,
    SecureProtocols = 4,
    TlsV1_0OrLater = 5,
    TlsV1_1OrLater = 6,
    TlsV1_2OrLater = 7,
    DtlsV1_0 = 8,
    DtlsV1_0OrLater = 9,
    DtlsV1_2 = 10,
    DtlsV1_2OrLater = 11,
    TlsV1_3 = 12,
    TlsV1_3OrLater = 13,
}

impl Protocol {
    pub fn from_raw(raw: i32) -> Option<Self> {
        use Protocol::*;
        [
            Unknown,
            TlsV1_0,
            TlsV1_1,
            TlsV1_2,
            Any,
            SecureProtocols,
            TlsV1_0OrLater,
            TlsV1_1OrLater,
            TlsV1_2OrLater,
            DtlsV1_0,
            DtlsV1_0OrLater,
            DtlsV1_2,
            DtlsV1_2OrLater,
            TlsV1_3,
            TlsV1_3OrLater,
        ]
        .into_iter()
        .find(|p| *p as i32 == raw)
    }

    /// The usual name of a negotiated version, e.g. `TLSv1.3`.
    pub fn name(self) -> &'static str {
        use Protocol::*;
        match self {
            Unknown => "unknown",
            TlsV1_0 => "TLSv1.0",
            TlsV1_1 => "TLSv1.1",
            TlsV1_2 => "TLSv1.2",
            Any => "any",
            SecureProtocols => "secure protocols",
            TlsV1_0OrLater => "TLSv1.0 or later",
            TlsV1_1OrLater => "TLSv1.1 or later",
            TlsV1_2OrLater => "TLSv1.2 or later",
            DtlsV1_0 => "DTLSv1.0",
            DtlsV1_0OrLater => "DTLSv1.0 or later",
            DtlsV1_2 => "DTLSv1.2",
            DtlsV1_2OrLater => "DTLSv1.2 or later",
            TlsV1_3 => "TLSv1.3",
            TlsV1_3OrLater => "TLSv1.3 or later",
        }
    }
}

/// The level of a TLS alert: `QSsl::AlertLevel`.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertLevel {
    Warning = 0,
    Fatal = 1,
    Unknown = 2,
}

/// A TLS alert description, by its wire code (RFC 8446 and RFC 5246).
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertType {
    CloseNotify = 0,
    UnexpectedMessage = 10,
    BadRecordMac = 20,
    DecryptionFailed = 21,
    RecordOverflow = 22,
    DecompressionFailure = 30,
    HandshakeFailure = 40,
    NoCertificate = 41,
    BadCertificate = 42,
    UnsupportedCertificate = 43,
    CertificateRevoked = 44,
    CertificateExpired = 45,
    CertificateUnknown = 46,
    IllegalParameter = 47,
    UnknownCa = 48,
    AccessDenied = 49,
    DecodeError = 50,
    DecryptError = 51,
    ExportRestriction = 60,
    ProtocolVersion = 70,
    InsufficientSecurity = 71,
    InternalError = 80,
    InappropriateFallback = 86,
    UserCanceled = 90,
    NoRenegotiation = 100,
    MissingExtension = 109,
    UnsupportedExtension = 110,
    CertificateUnobtainable = 111,
    UnrecognizedName = 112,
    BadCertificateStatusResponse = 113,
    BadCertificateHashValue = 114,
    UnknownPskIdentity = 115,
    CertificateRequired = 116,
    NoApplicationProtocol = 120,
    /// Any code not listed above (Qt's `UnknownAlertMessage`).
    UnknownAlertMessage = 255,
}

impl AlertType {
    /// The alert for a wire code; unlisted codes become `UnknownAlertMessage`.
    pub fn from_wire(code: u8) -> Self {
        use AlertType::*;
        const ALL: [AlertType; 34] = [
            CloseNotify,
            UnexpectedMessage,
            BadRecordMac,
            DecryptionFailed,
            RecordOverflow,
            DecompressionFailure,
            HandshakeFailure,
            NoCertificate,
            BadCertificate,
            UnsupportedCertificate,
            CertificateRevoked,
            CertificateExpired,
            CertificateUnknown,
            IllegalParameter,
            UnknownCa,
            AccessDenied,
            DecodeError,
            DecryptError,
            ExportRestriction,
            ProtocolVersion,
            InsufficientSecurity,
            InternalError,
            InappropriateFallback,
            UserCanceled,
            NoRenegotiation,
            MissingExtension,
            UnsupportedExtension,
            CertificateUnobtainable,
            UnrecognizedName,
            BadCertificateStatusResponse,
            BadCertificateHashValue,
            UnknownPskIdentity,
            CertificateRequired,
            NoApplicationProtocol,
        ];
        ALL.into_iter()
            .find(|a| *a as i32 == i32::from(code))
            .unwrap_or(UnknownAlertMessage)
    }
}

/// `QAbstractSocket::SocketState`, same numbers.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketState {
    Unconnected = 0,
    HostLookup = 1,
    Connecting = 2,
    Connected = 3,
    Bound = 4,
    Listening = 5,
    Closing = 6,
}

/// The kinds of event a server reports, one per Qt signal.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// TCP connection accepted, before TLS (`newConnection`).
    NewConnection = 0,
    /// The first byte was a TLS handshake record (`startedEncryptionHandshake`).
    StartedEncryptionHandshake = 1,
    /// One client-certificate error (`peerVerifyError`).
    PeerVerifyError = 2,
    /// All client-certificate errors, once (`sslErrors`).
    SslErrors = 3,
    /// Verification stopped at the first error (`handshakeInterruptedOnError`).
    HandshakeInterruptedOnError = 4,
    /// The server sent an alert (`alertSent`).
    AlertSent = 5,
    /// The client sent an alert (`alertReceived`).
    AlertReceived = 6,
    /// The handshake failed; the connection is closed (`errorOccurred`).
    ErrorOccurred = 7,
    /// A handshaken connection entered the queue (`pendingConnectionAvailable`).
    PendingConnectionAvailable = 8,
    /// Never emitted with rustls (it has no PSK cipher suites).
    PreSharedKeyAuthenticationRequired = 9,
    /// `accept()` failed, for example with EMFILE (`acceptError`).
    AcceptError = 10,
    /// Socket only: the handshake completed (`encrypted`).
    Encrypted = 11,
    /// Socket only: the socket left UNENCRYPTED mode for client or server
    /// mode (`modeChanged`), as a start call begins.
    ModeChanged = 12,
    /// Socket only, client mode: the server sent a TLS 1.3 session ticket
    /// (`newSessionTicketReceived`); a later connection with the same
    /// `sslconfig` can resume with it.
    NewSessionTicketReceived = 13,
}

impl EventKind {
    /// cbindgen:ignore
    pub const COUNT: usize = 14;

    pub fn from_raw(raw: i32) -> Option<Self> {
        use EventKind::*;
        [
            NewConnection,
            StartedEncryptionHandshake,
            PeerVerifyError,
            SslErrors,
            HandshakeInterruptedOnError,
            AlertSent,
            AlertReceived,
            ErrorOccurred,
            PendingConnectionAvailable,
            PreSharedKeyAuthenticationRequired,
            AcceptError,
            Encrypted,
            ModeChanged,
            NewSessionTicketReceived,
        ]
        .into_iter()
        .find(|k| *k as i32 == raw)
    }

    /// The C enumerator without its prefix, e.g. `NEW_CONNECTION`.
    pub fn name(self) -> &'static str {
        use EventKind::*;
        match self {
            NewConnection => "NEW_CONNECTION",
            StartedEncryptionHandshake => "STARTED_ENCRYPTION_HANDSHAKE",
            PeerVerifyError => "PEER_VERIFY_ERROR",
            SslErrors => "SSL_ERRORS",
            HandshakeInterruptedOnError => "HANDSHAKE_INTERRUPTED_ON_ERROR",
            AlertSent => "ALERT_SENT",
            AlertReceived => "ALERT_RECEIVED",
            ErrorOccurred => "ERROR_OCCURRED",
            PendingConnectionAvailable => "PENDING_CONNECTION_AVAILABLE",
            PreSharedKeyAuthenticationRequired => "PRE_SHARED_KEY_AUTHENTICATION_REQUIRED",
            AcceptError => "ACCEPT_ERROR",
            Encrypted => "ENCRYPTED",
            ModeChanged => "MODE_CHANGED",
            NewSessionTicketReceived => "NEW_SESSION_TICKET_RECEIVED",
        }
    }

    /// Kinds only a socket reports (`sslsocket_register_callback`).
    pub fn is_socket_only(self) -> bool {
        matches!(
            self,
            EventKind::Encrypted | EventKind::ModeChanged | EventKind::NewSessionTicketReceived
        )
    }
}

/// Whether a socket is encrypted, and as which end (`QSslSocket::SslMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Plain TCP: a socket from a descriptor or `sslsocket_connect`, before
    /// a start call.
    Unencrypted = 0,
    /// The client end of TLS.
    Client = 1,
    /// The server end of TLS.
    Server = 2,
}

impl SslMode {
    pub(crate) fn from_u8(raw: u8) -> Self {
        match raw {
            1 => SslMode::Client,
            2 => SslMode::Server,
            _ => SslMode::Unencrypted,
        }
    }
}

/// Whether a server expects HAProxy's PROXY protocol header (version 1 or
/// 2) in front of each connection's TLS stream.
/// cbindgen:prefix-with-name
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// No header: the TLS stream starts at the first byte (the default).
    #[default]
    Off = 0,
    /// Every connection must start with a valid header; one without is
    /// closed before its handshake.
    Required = 1,
}

impl ProxyProtocol {
    pub fn from_raw(raw: i32) -> Option<Self> {
        use ProxyProtocol::*;
        [Off, Required].into_iter().find(|m| *m as i32 == raw)
    }
}

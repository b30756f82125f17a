//! The client side: rustls configurations and one blocking connection (TLS or
//! plain TCP) with a receive buffer, so that rustls's 4 KiB `read_tls` steps
//! do not each cost the client a system call.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::{
    aws_lc_rs, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, SignatureScheme,
    SupportedProtocolVersion,
};

/// Every peer speaks X25519, and offering it first (its key share is the
/// only one sent) keeps the key exchange the same for all of them: no
/// HelloRetryRequest, no post-quantum share that only some servers would
/// take. P-256 is listed too because TLS 1.2 servers with a P-256 ECDSA
/// certificate (OpenSSL) require the client to list the certificate's curve.
pub fn provider() -> CryptoProvider {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1];
    p
}

pub fn versions(proto: &str) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    static V13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static V12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static ANY: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    match proto {
        "1.3" => Ok(&V13),
        "1.2" => Ok(&V12),
        "any" => Ok(&ANY),
        other => Err(format!("--proto must be 1.3, 1.2 or any (got {other})")),
    }
}

/// Accepts the server's certificate without path validation (the servers
/// use throwaway self-signed certificates) but checks the handshake
/// signature, as a real client does: that is the client's share of the
/// work, and skipping it would flatter the client, not the server.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client configuration: `proto` 1.3, 1.2 or any; `resume` keeps session
/// tickets (and TLS 1.2 session IDs) and offers them.
pub fn client_config(proto: &str, resume: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions(proto)?)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(algorithms)))
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(1024).tls12_resumption(Tls12Resumption::SessionIdOrTickets)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid DNS name")
}

pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))
}

pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{path}: {e}"))
}

const RECV_BUFFER: usize = 32 * 1024;

/// One blocking client connection: TLS through rustls, or plain TCP.
pub struct Conn {
    pub tcp: TcpStream,
    pub tls: Option<ClientConnection>,
    inbuf: Vec<u8>,
    pos: usize,
    end: usize,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::other(format!("TLS: {e}"))
}

impl Conn {
    /// TCP connect; then the TLS handshake unless `config` is `None`.
    pub fn open(
        addr: SocketAddr,
        config: Option<&Arc<ClientConfig>>,
        timeout: Duration,
    ) -> io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let tls = match config {
            Some(config) => {
                Some(ClientConnection::new(config.clone(), server_name()).map_err(tls_error)?)
            }
            None => None,
        };
        let mut conn = Conn {
            tcp,
            tls,
            inbuf: vec![0u8; RECV_BUFFER],
            pos: 0,
            end: 0,
        };
        conn.handshake()?;
        Ok(conn)
    }

    fn handshake(&mut self) -> io::Result<()> {
        if self.tls.is_none() {
            return Ok(());
        }
        loop {
            self.flush()?;
            if !self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                return Ok(());
            }
            if self.fill_tls()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                ));
            }
        }
    }

    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.tls.as_ref().and_then(|t| t.handshake_kind())
    }

    pub fn cipher(&self) -> String {
        self.tls
            .as_ref()
            .and_then(|t| t.negotiated_cipher_suite())
            .and_then(|s| s.suite().as_str().map(str::to_string))
            .unwrap_or_else(|| "none".into())
    }

    /// Sends everything rustls has queued.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                tls.write_tls(&mut &self.tcp)?;
            }
        }
        Ok(())
    }

    /// Feeds rustls from the receive buffer, reading the socket when the
    /// buffer is empty; 0 at end of stream.
    fn fill_tls(&mut self) -> io::Result<usize> {
        let tls = self.tls.as_mut().expect("TLS connection");
        if self.pos == self.end {
            if self.inbuf.is_empty() {
                self.inbuf = vec![0u8; RECV_BUFFER];
            }
            let n = (&self.tcp).read(&mut self.inbuf)?;
            if n == 0 {
                return Ok(0);
            }
            self.pos = 0;
            self.end = n;
        }
        let n = tls.read_tls(&mut &self.inbuf[self.pos..self.end])?;
        self.pos += n;
        tls.process_new_packets().map_err(tls_error)?;
        Ok(n)
    }

    /// Sends all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => (&self.tcp).write_all(data),
            Some(_) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = self.tls.as_mut().unwrap().writer().write(rest)?;
                    rest = &rest[n..];
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Reads some bytes; 0 at the end of the stream (close_notify or EOF).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return (&self.tcp).read(buf);
        }
        loop {
            match self.tls.as_mut().unwrap().reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.fill_tls()? == 0 {
                return Ok(0);
            }
            self.flush()?;
        }
    }

    /// Reads exactly `buf.len()` bytes.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.read(&mut buf[got..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            got += n;
        }
        Ok(())
    }

    /// Closes this side (close_notify, or a TCP half-close) and reads until
    /// the server closes. Reading to the end also takes in the TLS 1.3
    /// session tickets, which resumption needs.
    pub fn close_and_drain(mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.send_close_notify();
                self.flush()?;
            }
            None => self.tcp.shutdown(Shutdown::Write)?,
        }
        let mut sink = [0u8; 4096];
        loop {
            if self.read(&mut sink)? == 0 {
                return Ok(());
            }
        }
    }

    /// Hands rustls what the receive buffer still holds (before the caller
    /// takes over the socket itself).
    pub fn feed_buffered(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            while self.pos < self.end {
                let n = tls.read_tls(&mut &self.inbuf[self.pos..self.end])?;
                self.pos += n;
                tls.process_new_packets().map_err(tls_error)?;
            }
        }
        Ok(())
    }

    /// Frees the receive buffer of a connection that only waits.
    pub fn shrink(&mut self) {
        if self.pos == self.end {
            self.inbuf = Vec::new();
            self.pos = 0;
            self.end = 0;
        }
    }
}

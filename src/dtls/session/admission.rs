//! Who gets a peer-table entry: a ClientHello from an address without a
//! session is answered statelessly (HelloVerifyRequest); one that returns a
//! valid cookie starts a handshake, within the peer table's bounds (total,
//! per address, handshakes per address). A known address starts a new
//! session only with a cookie made after its current one began, and the
//! current one is removed only once the new handshake has started (RFC 6347
//! 4.2.8).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::cookie::{self, ClientHello, CookieJar};
use super::super::engine::PeerEngine;
use super::super::events::{bump, DtlsAuthentication, DtlsEvent, DtlsEventKind};
use super::super::peers::Peer;
use super::super::server::ms;
use super::{Pending, Session, Table};
use crate::types::SocketError;

impl Session {
    pub(super) fn hello_verify(
        &self,
        jar: &CookieJar,
        from: SocketAddr,
        key: SocketAddr,
        hello: &ClientHello<'_>,
        now: Instant,
    ) {
        let cookie = jar.cookie(key, hello, now);
        bump(&self.counters.hello_verify_requests);
        self.send(
            from,
            &cookie::hello_verify_request(hello.record_sequence, &cookie),
        );
    }

    /// A ClientHello from an address without a session (or from a known
    /// peer that starts over with a new random). Every check comes before
    /// anything is removed: a known address's session is replaced only by a
    /// handshake that has started (RFC 6347 4.2.8), and only with a cookie
    /// made after that session began.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_hello(
        &self,
        table: &mut Table,
        from: SocketAddr,
        key: SocketAddr,
        hello: &ClientHello<'_>,
        datagram: &[u8],
        now: Instant,
        pending: &mut Pending,
    ) {
        let issued = match hello.cookie() {
            [] => None,
            _ => table.jar.verify(key, hello),
        };
        let Some(issued) = issued else {
            if !hello.cookie().is_empty() {
                bump(&self.counters.cookies_rejected);
            }
            self.hello_verify(&table.jar, from, key, hello, now);
            return;
        };
        let old = table.peers.get(&key);
        if old.is_some_and(|old| issued <= table.jar.time(old.since)) {
            // Only a replay of an earlier session's ClientHello carries a
            // cookie made before this session began; the client itself is
            // past its handshake and ignores a HelloVerifyRequest.
            bump(&self.counters.cookies_rejected);
            return;
        }
        if hello.record_sequence == 0 || hello.message_sequence == 0 {
            // Every client numbers this record and message after its first
            // ClientHello's; the engine is shown that one first (engine.rs),
            // so both need a number below. A retransmission has a higher
            // record number.
            bump(&self.counters.datagrams_dropped);
            return;
        }
        let replacing = usize::from(old.is_some());
        let replacing_handshake = usize::from(old.is_some_and(|old| !old.established));
        let goes_on = if replacing == 1 {
            " (its current session goes on)"
        } else {
            ""
        };
        let max = usize::try_from(self.common.max_peers.load(Ordering::Relaxed)).unwrap_or(1);
        if table.peers.len() - replacing >= max {
            bump(&self.counters.datagrams_dropped);
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::SocketResource,
                format!("{key}: too many peers ({max}), handshake refused"),
            ));
            return;
        }
        let per_address = usize::try_from(
            self.common
                .max_handshakes_per_address
                .load(Ordering::Relaxed),
        )
        .unwrap_or(1);
        if table.peers.handshaking_from(key.ip()) - replacing_handshake >= per_address {
            bump(&self.counters.handshakes_refused_per_address);
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::SocketResource,
                format!(
                    "{key}: {} already has {per_address} handshakes in progress, handshake \
                     refused{goes_on}",
                    key.ip()
                ),
            ));
            return;
        }
        let peers_per_address =
            usize::try_from(self.common.max_peers_per_address.load(Ordering::Relaxed)).unwrap_or(1);
        if table.peers.all_from(key.ip()) - replacing >= peers_per_address {
            bump(&self.counters.peers_refused_per_address);
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::SocketResource,
                format!(
                    "{key}: {} already has {peers_per_address} peers, handshake \
                     refused{goes_on}",
                    key.ip()
                ),
            ));
            return;
        }
        let config = self.engine.lock().clone();
        let started = PeerEngine::start(&config, self.local, from, hello, datagram, now);
        let (engine, step) = match started {
            Ok(started) => started,
            Err((reason, alert)) => {
                self.send_all(from, &alert);
                pending.push(DtlsEvent::error(
                    Some(key),
                    SocketError::SslHandshakeFailed,
                    format!("{key}: handshake failed: {reason}{goes_on}"),
                ));
                return;
            }
        };
        if table.peers.remove(&key).is_some() {
            pending.push(DtlsEvent::error(
                Some(key),
                SocketError::RemoteHostClosed,
                format!("{key}: the peer started a new session; the old one is discarded"),
            ));
        }
        pending.push(DtlsEvent::new(
            DtlsEventKind::HandshakeStarted,
            Some(key),
            format!("{key}: verified, starting a handshake"),
        ));
        let handshake_timeout = self.common.handshake_timeout_ms.load(Ordering::Relaxed);
        let peer = Peer {
            raw: from,
            engine,
            established: false,
            client_random: hello.random().to_vec(),
            handshake_deadline: ms(handshake_timeout).map(|t| now + t),
            since: now,
            last_activity: now,
            idle_timeout: None,
            unauthenticated_bytes: datagram.len(),
            identity: Vec::new(),
            authentication: DtlsAuthentication::None,
            cipher_suite: String::new(),
        };
        if !table.peers.insert(key, peer, max) {
            return;
        }
        bump(&self.counters.handshakes_started);
        self.apply(table, key, step, now, pending);
    }
}

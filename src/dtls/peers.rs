//! The peer table: one entry per client that returned a valid cookie, keyed
//! by its address and port, bounded in size, with each peer's deadlines.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::engine::PeerEngine;
use super::events::{DtlsAuthentication, DtlsEvent};

pub(crate) struct Peer {
    /// The address as the socket reports it (what replies go to).
    pub raw: SocketAddr,
    pub engine: PeerEngine,
    pub established: bool,
    /// The random of the ClientHello that created the session, to tell a
    /// retransmitted ClientHello from a client that restarted.
    pub client_random: Vec<u8>,
    /// When the peer's session began: its handshake, then its completion.
    /// Only a cookie made after it can start a new session on this address.
    pub since: Instant,
    /// The handshake must complete by then (`None`: no limit).
    pub handshake_deadline: Option<Instant>,
    /// Last authenticated datagram from the peer (or handshake completion).
    pub last_activity: Instant,
    pub idle_timeout: Option<Duration>,
    /// Bytes the peer sent that no key vouches for: every byte before its
    /// handshake completed, and epoch-0 bytes after.
    pub unauthenticated_bytes: usize,
    pub identity: Vec<u8>,
    /// Set when the handshake completes.
    pub authentication: DtlsAuthentication,
    pub cipher_suite: String,
}

impl Peer {
    /// The earliest moment something must happen for this peer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let own = if self.established {
            self.idle_timeout.map(|idle| self.last_activity + idle)
        } else {
            self.handshake_deadline
        };
        match (own, self.engine.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds what is known of the peer's session to an event about it.
    pub(crate) fn stamp(&self, event: &mut DtlsEvent) {
        event.psk_identity = self.identity.clone();
        event.authentication = self.authentication;
        event.cipher_suite = self.cipher_suite.clone();
    }

    /// Counts `len` more unauthenticated bytes; false if that goes over
    /// `budget` (then nothing is counted).
    pub(crate) fn charge(&mut self, len: usize, budget: usize) -> bool {
        if self.unauthenticated_bytes + len > budget {
            return false;
        }
        self.unauthenticated_bytes += len;
        true
    }
}

/// The peers, by canonical address (IPv4-mapped IPv6 shown as IPv4).
#[derive(Default)]
pub(crate) struct PeerTable {
    peers: HashMap<SocketAddr, Peer>,
}

impl PeerTable {
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn get(&self, key: &SocketAddr) -> Option<&Peer> {
        self.peers.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &SocketAddr) -> Option<&mut Peer> {
        self.peers.get_mut(key)
    }

    pub(crate) fn remove(&mut self, key: &SocketAddr) -> Option<Peer> {
        self.peers.remove(key)
    }

    /// Adds a peer unless the table holds `max` already (then the peer is
    /// dropped and this returns false).
    pub(crate) fn insert(&mut self, key: SocketAddr, peer: Peer, max: usize) -> bool {
        if self.peers.len() >= max && !self.peers.contains_key(&key) {
            return false;
        }
        self.peers.insert(key, peer);
        true
    }

    /// Peers from `ip` whose handshake has not completed.
    pub(crate) fn handshaking_from(&self, ip: IpAddr) -> usize {
        self.peers
            .iter()
            .filter(|(key, peer)| key.ip() == ip && !peer.established)
            .count()
    }

    /// Peers from `ip`, handshaking or established.
    pub(crate) fn all_from(&self, ip: IpAddr) -> usize {
        self.peers.keys().filter(|key| key.ip() == ip).count()
    }

    pub(crate) fn keys(&self) -> Vec<SocketAddr> {
        self.peers.keys().copied().collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.peers.values().filter_map(Peer::next_deadline).min()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (SocketAddr, Peer)> + '_ {
        self.peers.drain()
    }
}

/// The key for an address: IPv4-mapped IPv6 addresses (from a dual-stack
/// socket) as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

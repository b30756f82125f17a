//! The peer table: one entry per client that returned a valid cookie, keyed
//! by its address and port, bounded in size, with each peer's deadlines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::engine::PeerEngine;

/// Epoch-0 bytes a peer may feed its engine over its whole life. A PSK
/// handshake takes well under 2 KiB of them, retransmissions included; the
/// bound keeps whoever spoofs a known peer's address from filling the
/// engine's reassembly buffers.
pub(crate) const EPOCH0_BUDGET: usize = 64 * 1024;

pub(crate) struct Peer {
    /// The address as the socket reports it (what replies go to).
    pub raw: SocketAddr,
    pub engine: PeerEngine,
    pub established: bool,
    /// The random of the ClientHello that created the session, to tell a
    /// retransmitted ClientHello from a client that restarted.
    pub client_random: Vec<u8>,
    /// The handshake must complete by then (`None`: no limit).
    pub handshake_deadline: Option<Instant>,
    /// Last authenticated datagram from the peer (or handshake completion).
    pub last_activity: Instant,
    pub idle_timeout: Option<Duration>,
    pub epoch0_bytes: usize,
    pub identity: Vec<u8>,
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

    /// Whether an epoch-0 datagram of `len` bytes still fits the budget
    /// (and counts it if so).
    pub(crate) fn take_epoch0(&mut self, len: usize) -> bool {
        if self.epoch0_bytes + len > EPOCH0_BUDGET {
            return false;
        }
        self.epoch0_bytes += len;
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

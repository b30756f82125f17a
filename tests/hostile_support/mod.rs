//! Shared helpers of the hostile-client tests (tests/hostile.rs and
//! tests/garbage.rs): a server without client certificates, and the check
//! that no connection got an event after its terminal one.
#![allow(dead_code)]

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use crate::common::*;
use sslserver::EventKind::*;
use sslserver::PeerVerifyMode;

pub fn plain_server(setup: impl FnOnce(&sslserver::Server)) -> (TestCa, TestServer) {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let server = TestServer::start_with(&config, setup, |_| {});
    (ca, server)
}

/// Waits until `ports` all have a terminal event, then a little longer, and
/// checks that no connection got an event after its terminal one and that
/// no ACCEPT_ERROR was reported.
pub fn assert_nothing_else(server: &TestServer) {
    let before = server.events.all().len();
    thread::sleep(Duration::from_millis(300));
    let events = server.events.all();
    assert_eq!(
        events.len(),
        before,
        "events arrived after every connection ended: {:#?}",
        &events[before..]
    );
    assert!(
        !events.iter().any(|e| e.kind == AcceptError),
        "no accept error expected: {events:#?}"
    );
    let mut ended: HashMap<u16, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let port = e.peer_port.expect("connection event");
        if let Some(at) = ended.get(&port) {
            panic!("event {e:?} after the terminal event #{at} of :{port}");
        }
        if matches!(e.kind, ErrorOccurred | PendingConnectionAvailable) {
            ended.insert(port, i);
        }
    }
}

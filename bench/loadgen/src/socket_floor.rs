//! The socket floor: a bare rustls server over real loopback sockets, to
//! measure what TLS over TCP costs a server before any library design.
//!
//! One thread accepts a connection, runs the handshake, echoes until the
//! client's close_notify, answers with its own and closes, then accepts the
//! next. There is no hand-off between threads, no event, no deadline and no
//! concurrency, so it is a lower bound that no server serving clients
//! concurrently reaches; but it sends the same flights as the library
//! (server flight, session tickets, close_notify with the FIN), so the
//! socket work TLS adds above plain TCP is in it. The TLS configuration is
//! the in-memory floor's (`floor::server_config`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::util::Args;

/// `loadgen floor-server --cert C --key K [--port 0]`: serves until killed.
pub fn server(a: &Args) -> Result<bool, String> {
    let config = crate::floor::server_config(a)?;
    let port: u16 = a.num("--port", 0)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {local}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    // A client that fails (to connect or later) costs the measurement
    // nothing more.
    for mut tcp in listener.incoming().flatten() {
        let _ = tcp.set_nodelay(true);
        let _ = serve(&config, &mut tcp);
    }
    Ok(true)
}

fn serve(config: &Arc<ServerConfig>, tcp: &mut TcpStream) -> io::Result<()> {
    let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let mut plain = [0u8; 16 * 1024];
    loop {
        // Whatever rustls has to say goes out before waiting: a flight,
        // the session tickets, echoed bytes.
        while tls.wants_write() {
            tls.write_tls(tcp)?;
        }
        match tls.reader().read(&mut plain) {
            Ok(0) => break,
            Ok(n) => {
                tls.writer().write_all(&plain[..n])?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if tls.read_tls(tcp)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        tls.process_new_packets().map_err(io::Error::other)?;
    }
    tls.send_close_notify();
    let mut last = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut last)?;
    }
    // close_notify and the FIN in one segment, as the library sends them.
    let mut rest = &last[..];
    while !rest.is_empty() {
        // SAFETY: `rest` is a live slice and the descriptor is `tcp`'s, open
        // for the whole call.
        let n = unsafe {
            libc::send(
                tcp.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        rest = &rest[n as usize..];
    }
    tcp.shutdown(Shutdown::Write)
}

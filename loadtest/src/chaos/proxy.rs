//! A TCP proxy on loopback the chaos harness puts in front of what it wants
//! to break: each replica's relay listener (peers dial the proxy, as
//! advertised in `CHATD_RELAY_ADVERTISE_URL`) and each replica's way to
//! PostgreSQL (its `CHATD_DATABASE_URL` names the proxy).
//!
//! - [`Proxy::cut`] closes every connection at once and refuses new ones
//!   (accepted, then closed) until [`Proxy::restore`]: a link cut.
//! - [`Proxy::hold`] black-holes: bytes stop moving both ways on every
//!   connection, new connections are accepted and never answered, and
//!   nothing is closed, so no FIN or RST tells anyone; [`Proxy::release`]
//!   delivers what was held, late. Since the proxy is local, the kernel
//!   keeps acknowledging, so the replica gets no help from TCP timers and
//!   must notice the silence through its own timeouts: a partition as
//!   silent as a firewall DROP, without needing root, iptables or a
//!   network namespace.

use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinSet,
};

/// Buffer of each direction of a proxied connection.
const BUFFER: usize = 16 * 1024;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward them.
    Forward,
    /// Close new connections at once (existing ones were closed by the cut).
    Refuse,
    /// Move nothing, close nothing.
    Hold,
}

/// The proxy's state; a connection closes when the epoch moves past the
/// one it was accepted in.
#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    epoch: u64,
}

/// Forwards connections from a loopback port to `target` until dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    /// The accept loop; its connections are its own tasks.
    tasks: JoinSet<()>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, target)
    }

    /// A proxy on `listener` forwarding to `target`.
    pub fn serve(listener: TcpListener, target: SocketAddr) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State {
            mode: Mode::Forward,
            epoch: 0,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, target, state.subscribe()));
        Ok(Self { addr, state, tasks })
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection now and refuses new ones.
    pub fn cut(&self) {
        self.state.send_modify(|state| {
            state.mode = Mode::Refuse;
            state.epoch += 1;
        });
    }

    /// Forwards new connections again after [`Proxy::cut`].
    pub fn restore(&self) {
        self.state.send_modify(|state| state.mode = Mode::Forward);
    }

    /// Stops moving bytes on every connection, old and new, silently.
    pub fn hold(&self) {
        self.state.send_modify(|state| state.mode = Mode::Hold);
    }

    /// Moves bytes again after [`Proxy::hold`], the held ones first.
    pub fn release(&self) {
        self.state.send_modify(|state| state.mode = Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Connections end with the accept loop: they watch the state,
        // whose sender goes away with us.
        self.tasks.abort_all();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                let now = *state.borrow();
                if now.mode == Mode::Refuse {
                    drop(inbound);
                    continue;
                }
                connections.spawn(connection(inbound, target, state.clone(), now.epoch));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One proxied connection: dialled once bytes may move, then pumped both
/// ways until either side closes or a cut closes it.
async fn connection(
    inbound: TcpStream,
    target: SocketAddr,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    if !may_move(&mut state, epoch).await {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = pump(in_read, out_write, state.clone(), epoch) => {}
        _ = pump(out_read, in_write, state, epoch) => {}
    }
}

/// Waits while bytes are held; false once the connection must close.
async fn may_move(state: &mut watch::Receiver<State>, epoch: u64) -> bool {
    loop {
        let now = *state.borrow_and_update();
        if now.epoch != epoch {
            return false;
        }
        if now.mode == Mode::Forward {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies `from` to `to` while the state lets bytes move.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    let mut buffer = vec![0; BUFFER];
    loop {
        if !may_move(&mut state, epoch).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Re-check: a hold or a cut applies at once.
            changed = state.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let read = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An echo server and a proxy in front of it.
    async fn echo_behind_proxy() -> Proxy {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Proxy::start(target).await.unwrap()
    }

    async fn round_trip(socket: &mut TcpStream, text: &[u8]) -> io::Result<Vec<u8>> {
        socket.write_all(text).await?;
        let mut answer = vec![0; text.len()];
        socket.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_cut_closes_connections_and_refuses_new_ones_until_restored() {
        let proxy = echo_behind_proxy().await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut socket, b"hi").await.unwrap(), b"hi");
        proxy.cut();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "the connection was closed");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused, b"x").await.is_err());
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_hold_delivers_nothing_closes_nothing_and_releases_late() {
        let proxy = echo_behind_proxy().await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut socket, b"a").await.unwrap(), b"a");
        proxy.hold();
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut socket, b"b"));
        assert!(held.await.is_err(), "nothing moves while held");
        fresh.write_all(b"c").await.unwrap();
        proxy.release();
        let mut late = [0; 1];
        socket.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"b", "what was held arrives after the release");
        fresh.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"c");
    }
}

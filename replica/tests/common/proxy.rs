//! A TCP proxy that tests can cut and restore, to break connections between
//! replicas (or to a database) at a moment of their choosing.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections to its target until cut.
pub struct Proxy {
    addr: SocketAddr,
    /// Where connections go; `None` refuses them (the target is not up yet).
    target: Arc<Mutex<Option<SocketAddr>>>,
    open: Arc<AtomicBool>,
    /// Cancelled to drop every connection open now.
    current: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and refuses connections until
    /// [`Proxy::route_to`] names a target: a test learns the proxy's address
    /// before it starts what the proxy leads to, and no port is ever freed
    /// and bound again (another test could take it in between).
    pub async fn listen() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(None::<SocketAddr>));
        let open = Arc::new(AtomicBool::new(true));
        let current = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn({
            let (open, current, stop, target) =
                (open.clone(), current.clone(), stop.clone(), target.clone());
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut inbound, _)) = accepted else {
                        continue;
                    };
                    let Some(target) = *target.lock().unwrap() else {
                        continue;
                    };
                    if !open.load(Ordering::Acquire) {
                        drop(inbound);
                        continue;
                    }
                    let cut = current.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = cut.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            target,
            open,
            current,
            stop,
        }
    }

    /// Forwards new connections to `target`.
    pub fn route_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    /// `ws://` URL of the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        let mut current = self.current.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.current.lock().unwrap().cancel();
    }
}

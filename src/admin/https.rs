//! The console's HTTPS listener: an [`axum::serve::Listener`] that hands axum only
//! connections whose TLS handshake completed. A background task accepts TCP
//! connections and runs each handshake in its own task (bounded in number and time),
//! so a client that never finishes its handshake holds up nobody else. The handshake
//! is the SMTP listeners' ([`crate::smtp::tls::accept`]): the server key stays in the
//! token and signs there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;
/// How long a client may take for its whole handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (its ALPN is set to HTTP/1.1).
    pub fn spawn(listener: TcpListener, config: &rustls::ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let mut config = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let (sender, ready) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(accept_loop(listener, config, sender));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "console: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if sender.is_closed() {
            return;
        }
        let (config, sender) = (config.clone(), sender.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match crate::smtp::tls::accept(config, stream, HANDSHAKE_TIMEOUT).await {
                Ok(tls) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "console: TLS handshake failed"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ended (its listener failed for good): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

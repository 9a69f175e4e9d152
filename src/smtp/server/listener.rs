//! Accepting connections: each becomes a session in its own task, unless its listener
//! is full (`421 4.3.2`) or its client address already has as many sessions as
//! allowed (`421 4.7.0`, to that client only). A shutdown stops accepting at once.
//! Exposure: talks to the outside world (any address may connect).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::control::{Phase, reached};
use super::{Handler, Server};
use crate::smtp::Reply;

/// How long a refused client gets to take its `421`.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl<H: Handler> Server<H> {
    /// Accepts sessions until the process starts shutting down; each runs in its own
    /// task (which outlives this call until it ends by itself or by the shutdown).
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        let mut phase = self.control.subscribe();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = reached(&mut phase, Phase::Draining) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let limits = self.control.limits();
            match self.control.admit(peer.ip(), &active, &limits) {
                Ok(slot) => {
                    let server = self.clone();
                    tokio::spawn(async move {
                        server.session(stream, peer).await;
                        drop(slot);
                    });
                }
                Err(refusal) => {
                    let span = tracing::info_span!("smtp", peer = %peer, listener = self.config.listener.as_str());
                    tracing::warn!(parent: &span, reason = ?refusal, "connection refused");
                    tokio::spawn(refuse(stream, refusal.reply()).instrument(span));
                }
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, reply: Reply) {
    let write = async {
        stream.write_all(&reply.to_wire()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

//! Starting and stopping a gateway: bind, serve until told to stop, and
//! on a graceful stop end the event streams and let requests in flight
//! finish (up to the grace period) while taking no new ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use metrics_exporter_prometheus::PrometheusHandle;
use tandem_core::dsn::redacted;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::ServeError;
use crate::pool::Settings;
use crate::relay::Relay;
use crate::routes::{router, AppState};
use crate::wakes::Wakes;
use crate::{certificate, listener, metrics, pool, socket};

/// A gateway bound to its address, its database checked, not serving yet.
pub struct Gateway {
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    stopper: Stopper,
    metrics: PrometheusHandle,
    /// For the `LISTEN` connection, opened once serving starts.
    database: Settings,
    wakes: Wakes,
    header_read_timeout: Duration,
}

/// Stops a gateway from anywhere (a signal, a test).
#[derive(Clone)]
pub struct Stopper {
    handle: Handle<SocketAddr>,
    grace: Duration,
    /// Ends the event streams, which would otherwise hold a graceful stop
    /// for its whole grace period.
    stopping: Arc<watch::Sender<bool>>,
}

impl Stopper {
    /// Ends the event streams, takes no new connections and ends once the
    /// requests in flight are answered, or the grace period is over.
    pub fn graceful(&self) {
        self.stopping.send_replace(true);
        self.handle.graceful_shutdown(Some(self.grace));
    }

    /// Closes every connection at once, as a crash would.
    pub fn now(&self) {
        self.stopping.send_replace(true);
        self.handle.shutdown();
    }
}

impl Gateway {
    /// Checks the settings, loads the certificate, checks that the database
    /// answers and that the gateway's role may execute the sync functions,
    /// and binds the address.
    pub async fn bind(config: &Config) -> Result<Gateway, ServeError> {
        config.check()?;
        let tls = config.tls.as_ref().map(certificate::load).transpose()?;
        let database = pool::settings(&config.database_url)?;
        let relay = Relay::new(pool::build(&database, config.pool_size)?);
        relay.check().await.map_err(|reason| ServeError::Database { url: redacted(&config.database_url), reason })?;
        let metrics = metrics::recorder();
        let (stopping, stopped) = watch::channel(false);
        let wakes = Wakes::default();
        let state =
            AppState { relay, metrics: metrics.clone(), wakes: wakes.clone(), stopping: stopped, token_recheck: config.token_recheck };
        let router = router(state, config.max_body_bytes);
        let listener = socket::bind(config.listen).map_err(|e| ServeError::Bind { listen: config.listen, reason: e.to_string() })?;
        let stopper = Stopper { handle: Handle::new(), grace: config.shutdown_grace, stopping: Arc::new(stopping) };
        Ok(Gateway { listener, router, tls, stopper, metrics, database, wakes, header_read_timeout: config.header_read_timeout })
    }

    /// The address it listens on (the port chosen when given port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(|e| ServeError::Serve(e.to_string()))
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until stopped.
    pub async fn serve(self) -> Result<(), ServeError> {
        let upkeep = tokio::spawn(metrics::upkeep(self.metrics));
        let listening = tokio::spawn(listener::run(self.database, self.wakes));
        let app = self.router.into_make_service();
        let handle = self.stopper.handle;
        let header_timeout = self.header_read_timeout;
        // The same settings whether TLS is in front (from_tcp_rustls is
        // from_tcp with the rustls acceptor).
        let served = match axum_server::from_tcp(self.listener) {
            Ok(mut server) => {
                connection_limits(server.http_builder(), header_timeout);
                let server = server.handle(handle).first_request_timeout(header_timeout);
                match self.tls {
                    Some(tls) => server.acceptor(RustlsAcceptor::new(tls)).serve(app).await,
                    None => server.serve(app).await,
                }
            }
            Err(e) => Err(e),
        };
        upkeep.abort();
        listening.abort();
        served.map_err(|e| ServeError::Serve(e.to_string()))
    }
}

/// How often an HTTP/2 connection is pinged, and how long its answer may
/// take before the connection counts as dead.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What keeps a connection from being held for nothing: a new connection
/// gets `header_timeout` for its first request's headers (the server's
/// `first_request_timeout`, set beside this: it also covers the reading of
/// the first bytes that tells HTTP/1 from HTTP/2, which hyper does not
/// time), and HTTP/1 the same for each next request, counted from the
/// moment the connection is idle (so an idle keep-alive connection is
/// closed after it too); HTTP/2 is pinged, so a peer that is gone is let
/// go.
fn connection_limits(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>, header_timeout: Duration) {
    builder.http1().header_read_timeout(header_timeout);
    builder.http2().keep_alive_interval(HTTP2_PING_EVERY).keep_alive_timeout(HTTP2_PING_TIMEOUT);
}

/// Waits for SIGTERM or SIGINT.
async fn signalled() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; stop with SIGINT");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// `tandem serve`: serves until SIGTERM or SIGINT, then stops gracefully.
pub fn run(config: Config) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Serve(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let gateway = Gateway::bind(&config).await?;
        let addr = gateway.local_addr()?;
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, database = %redacted(&config.database_url), "serving devices at {scheme}://{addr}");
        let stopper = gateway.stopper();
        tokio::spawn(async move {
            signalled().await;
            tracing::info!(grace_s = stopper.grace.as_secs(), "stopping: finishing the requests in flight");
            stopper.graceful();
        });
        gateway.serve().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A gateway serving on a thread of its own (tests, benchmarks, embedding).
pub struct Running {
    addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// Binds and starts serving; returns once the gateway takes requests.
    pub fn start(config: Config) -> Result<Running, ServeError> {
        let (ready, bound) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tandem-gateway".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| ServeError::Serve(format!("cannot start the runtime: {e}")))?;
                runtime.block_on(async {
                    let gateway = match Gateway::bind(&config).await.and_then(|g| Ok((g.local_addr()?, g))) {
                        Ok((addr, gateway)) => {
                            let _ = ready.send(Ok((addr, gateway.stopper())));
                            gateway
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return Ok(());
                        }
                    };
                    gateway.serve().await
                })
            })
            .map_err(|e| ServeError::Serve(format!("cannot start the gateway's thread: {e}")))?;
        let (addr, stopper) = bound.recv().map_err(|_| ServeError::Serve("the gateway's thread ended before it bound".into()))??;
        Ok(Running { addr, stopper, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// A graceful stop: returns once the requests in flight are answered.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.stopper.graceful();
        self.join()
    }

    /// Stops at once, cutting requests in flight.
    pub fn kill(mut self) -> Result<(), ServeError> {
        self.stopper.now();
        self.join()
    }

    fn join(&mut self) -> Result<(), ServeError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServeError::Serve("the gateway's thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stopper.now();
        let _ = self.join();
    }
}

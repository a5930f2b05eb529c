//! The gateway's one `LISTEN tandem` connection, apart from the request
//! pool: each tracked table's trigger sends `pg_notify('tandem', <scope>)`
//! at commit, and every notification becomes a [`Wake`] for the event
//! streams. A lost connection is made again with backoff, and then every
//! stream is woken, since notifications may have been missed meanwhile.

use std::time::Duration;

use tandem_core::backoff::Backoff;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};

use crate::pool::Settings;
use crate::wakes::{Wake, Wakes};

/// The channel the extension's triggers notify.
pub const CHANNEL: &str = "tandem";

/// How often the connection is checked to be alive (a dead peer sends no
/// error by itself).
const PING_EVERY: Duration = Duration::from_secs(30);

/// How long a check may take before the connection counts as dead.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

const CONNECTED: &str = "tandem_gateway_listen_connected";

/// Listens until the task is aborted, reconnecting whenever the
/// connection is lost.
pub async fn run(mut settings: Settings, wakes: Wakes) {
    // Told apart from the pool's connections in pg_stat_activity.
    settings.config.application_name("tandem-gateway-listen");
    let mut backoff = Backoff::new();
    loop {
        let reason = match &settings.tls {
            None => match settings.config.connect(NoTls).await {
                Ok((client, connection)) => session(client, connection, &wakes, &mut backoff).await,
                Err(e) => e.to_string(),
            },
            Some(tls) => match settings.config.connect(tls.clone()).await {
                Ok((client, connection)) => session(client, connection, &wakes, &mut backoff).await,
                Err(e) => e.to_string(),
            },
        };
        metrics::gauge!(CONNECTED).set(0.0);
        let wait = backoff.next_wait();
        tracing::warn!(%reason, database = %settings.shown, retry_in_ms = wait.as_millis() as u64,
            "the LISTEN connection is down: devices are not woken until it is back");
        tokio::time::sleep(wait).await;
    }
}

/// One connection's life: `LISTEN`, then relay notifications until it
/// fails. Returns why it ended.
async fn session<S, T>(client: Client, mut connection: Connection<S, T>, wakes: &Wakes, backoff: &mut Backoff) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let heard = wakes.clone();
    // Polling the connection both runs the client's queries and yields
    // the notifications.
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) if note.channel() == CHANNEL => {
                    heard.send(Wake::Scope(note.payload().into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "the server closed the connection".to_string(),
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        driver.abort();
        return format!("LISTEN failed: {e}");
    }
    backoff.reset();
    metrics::gauge!(CONNECTED).set(1.0);
    tracing::info!("listening for commits (LISTEN {CHANNEL})");
    wakes.send(Wake::All);
    loop {
        tokio::select! {
            ended = &mut driver => return ended.unwrap_or_else(|e| e.to_string()),
            _ = tokio::time::sleep(PING_EVERY) => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => { driver.abort(); return e.to_string() }
                    Err(_) => { driver.abort(); return format!("no answer to a check within {} s", PING_TIMEOUT.as_secs()) }
                }
            }
        }
    }
}

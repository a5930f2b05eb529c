//! `GET /v1/scopes/{scope}/events`: a Server-Sent Events stream that tells
//! a device "something changed in your scope" (`event: changed`, data
//! `{}`), so it pulls at once instead of polling. Only the wake travels:
//! no rows, no other scope's names; the device pulls through the usual
//! endpoints, where its token decides what it gets.
//!
//! The token is checked when the stream opens (the same refusals as the
//! other endpoints) and again every `token_recheck` while it is open: a
//! revoked token's stream ends, and reopening it is refused.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::{self, Stream};
use serde_json::Map;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::api_error::ApiError;
use crate::auth::DeviceToken;
use crate::device_options::with_token;
use crate::metrics::{woke, Watcher};
use crate::relay::Relay;
use crate::routes::AppState;
use crate::wakes::Wake;

/// A burst of commits becomes one event per this long, at most: short
/// enough that 100 commits a second each reach a device at once (a
/// device's pull takes longer than this anyway, and gathers the rest).
const COALESCE: Duration = Duration::from_millis(10);

/// How often an idle stream says it is alive (a comment line), so
/// proxies keep it and the device can tell a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One open stream: what it watches and when it last told its device.
struct Watch {
    scope: String,
    /// The options a `sync_schema` call takes, with the token: how the
    /// token is checked again.
    options: String,
    relay: Relay,
    wakes: broadcast::Receiver<Wake>,
    stopping: watch::Receiver<bool>,
    recheck: Duration,
    /// A wake arrived that the device has not been told of.
    due: bool,
    last_sent: Option<Instant>,
    next_check: Instant,
    _counted: Watcher,
}

impl Watch {
    /// The next event, or `None` when the stream ends (gateway stopping,
    /// token no longer valid).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Watch)> {
        loop {
            let ready_at = self.last_sent.map_or_else(Instant::now, |at| at + COALESCE);
            if self.due && Instant::now() >= ready_at {
                self.due = false;
                self.last_sent = Some(Instant::now());
                woke();
                return Some((Ok(Event::default().event("changed").data("{}")), self));
            }
            let recheck = tokio::select! {
                heard = self.wakes.recv() => {
                    match heard {
                        Ok(wake) => self.due |= wake.concerns(&self.scope),
                        // Fell behind: which scopes were named is lost, so wake.
                        Err(RecvError::Lagged(_)) => self.due = true,
                        Err(RecvError::Closed) => return None,
                    }
                    false
                }
                _ = tokio::time::sleep_until(ready_at), if self.due => false,
                _ = tokio::time::sleep_until(self.next_check) => true,
                _ = self.stopping.wait_for(|stopping| *stopping) => return None,
            };
            if recheck {
                if !self.still_allowed().await {
                    return None;
                }
                self.next_check = Instant::now() + self.recheck;
            }
        }
    }

    /// Whether the token still reaches the scope. A database that cannot
    /// be asked right now keeps the stream: the device's own calls will
    /// say so.
    async fn still_allowed(&self) -> bool {
        match self.relay.schema(&self.scope, &self.options).await {
            Ok(_) => true,
            Err(refused) if [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&refused.status) => {
                tracing::info!(scope = %self.scope, status = refused.status.as_u16(), reason = %refused.message,
                    "ending an event stream: its token no longer reaches the scope");
                false
            }
            Err(other) => {
                tracing::warn!(scope = %self.scope, reason = %other.message, "cannot check an event stream's token now; keeping it");
                true
            }
        }
    }
}

pub async fn events(State(state): State<AppState>, Path(scope): Path<String>, token: DeviceToken) -> Result<impl IntoResponse, ApiError> {
    let options = with_token(Map::new(), &token)?;
    // Subscribed before the check, so a commit during it is not missed.
    let wakes = state.wakes.subscribe();
    state.relay.schema(&scope, &options).await?;
    let watch = Watch {
        scope,
        options,
        relay: state.relay.clone(),
        wakes,
        stopping: state.stopping.clone(),
        recheck: state.token_recheck,
        // The first event at once: the device pulls what it may have
        // missed before it subscribed.
        due: true,
        last_sent: None,
        next_check: Instant::now() + state.token_recheck,
        _counted: Watcher::enter(),
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(stream::unfold(watch, Watch::next));
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    // Proxies that buffer answers (nginx) would hold the events back.
    Ok(([("x-accel-buffering", "no")], sse))
}

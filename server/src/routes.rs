//! The gateway's router: its endpoints, and the layers every request goes
//! through (logs, compression both ways, the body limit, metrics). Event
//! streams are never compressed (the compression layer leaves
//! `text/event-stream` alone), so each event leaves at once.

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api_error::ApiError;
use crate::relay::Relay;
use crate::wakes::Wakes;
use crate::{events, handlers, health, metrics};

/// What every handler may reach.
#[derive(Clone)]
pub struct AppState {
    pub relay: Relay,
    pub metrics: PrometheusHandle,
    /// Commits heard on the `LISTEN` connection, for the event streams.
    pub wakes: Wakes,
    /// Turns true when the gateway stops: event streams end.
    pub stopping: watch::Receiver<bool>,
    /// How often an open event stream's token is checked again.
    pub token_recheck: Duration,
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: devices call /v1/scopes/{scope}/schema, /v1/scopes/{scope}/changes, /v1/scopes/{scope}/apply, \
         /v1/scopes/{scope}/verify and /v1/scopes/{scope}/events",
    )
}

/// The largest body of a pull (its options, a few hundred bytes): the
/// pull's own limit, far below an upload's, so a compressed bomb sent with
/// any token is cut at this size.
const OPTIONS_BODY_BYTES: usize = 64 << 10;

/// A request body that sends nothing for this long is cut.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// The decompression layer's 415 (an encoding it does not read) as the
/// JSON error every other refusal is (helper 98: an empty body).
async fn explain_unread_encoding(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bodiless = !response.headers().contains_key(axum::http::header::CONTENT_TYPE);
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE || !bodiless {
        return response;
    }
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the request body's Content-Encoding is not one this gateway reads: send it as gzip, zstd or unencoded",
    )
    .into_response()
}

/// The router; bodies larger than `max_body_bytes` once decompressed get 413.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/scopes/{scope}/schema", get(handlers::schema))
        .route("/v1/scopes/{scope}/changes", post(handlers::changes).layer(DefaultBodyLimit::max(OPTIONS_BODY_BYTES)))
        .route("/v1/scopes/{scope}/apply", post(handlers::apply))
        .route("/v1/scopes/{scope}/verify", post(handlers::verify))
        .route("/v1/scopes/{scope}/events", get(events::events))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::render))
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .with_state(state)
        // Inside decompression: the limit is on what the gateway holds.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestDecompressionLayer::new().gzip(true).zstd(true))
        // Its refusal of an encoding it does not read has no body.
        .layer(middleware::map_response(explain_unread_encoding))
        // Outside decompression: a body that stops coming is cut.
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE))
        // The fastest levels: changesets are repetitive JSON, which they
        // still shrink about fourfold, at a fraction of the default's CPU.
        .layer(CompressionLayer::new().gzip(true).zstd(true).quality(CompressionLevel::Fastest))
        // One line per request at info: method, path, status, latency. The
        // path only: a query string is the client's, and a careless one
        // may carry a token.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

//! Prometheus metrics: requests by route and status, their latency, the
//! rows and bytes moved each way, and the devices watching for changes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::routes::AppState;

const REQUESTS: &str = "tandem_gateway_requests_total";
const LATENCY: &str = "tandem_gateway_request_duration_seconds";
const IN_FLIGHT: &str = "tandem_gateway_requests_in_flight";
const ROWS: &str = "tandem_gateway_rows_total";
const BYTES: &str = "tandem_gateway_bytes_total";
const WATCHERS: &str = "tandem_gateway_watchers";
const WAKES: &str = "tandem_gateway_wakes_total";

/// The process's recorder, installed once: every gateway in the process
/// reports into it (one per process in production).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics shows nothing");
            }
            handle
        })
        .clone()
}

/// Keeps the recorder's histograms bounded while the gateway runs.
pub async fn upkeep(handle: PrometheusHandle) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        handle.run_upkeep();
    }
}

/// Middleware counting each routed request by its route's pattern.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let _in_flight = InFlight::enter();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(LATENCY, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Counts a request as in flight until it is answered or dropped (a
/// client that went away).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> InFlight {
        let gauge = metrics::gauge!(IN_FLIGHT);
        gauge.increment(1);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// Counts an open event stream until it ends or its device goes away.
pub struct Watcher(metrics::Gauge);

impl Watcher {
    pub fn enter() -> Watcher {
        let gauge = metrics::gauge!(WATCHERS);
        gauge.increment(1);
        Watcher(gauge)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// Records an `event: changed` sent to a device.
pub fn woke() {
    metrics::counter!(WAKES).increment(1);
}

/// Which way data moved: `up` from devices, `down` to them.
#[derive(Clone, Copy)]
pub enum Direction {
    Up,
    Down,
}

/// Records a changeset that went through, by its rows and bytes.
pub fn moved(direction: Direction, changeset: &str) {
    let label = match direction {
        Direction::Up => "up",
        Direction::Down => "down",
    };
    metrics::counter!(ROWS, "direction" => label).increment(tandem_core::changeset::count_rows(changeset) as u64);
    metrics::counter!(BYTES, "direction" => label).increment(changeset.len() as u64);
}

/// `GET /metrics`, in Prometheus' text format.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

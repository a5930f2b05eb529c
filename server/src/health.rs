//! `GET /healthz`: 200 when a pooled connection answers and may execute the
//! sync functions, else 503 saying what is wrong (for load balancers and
//! operators; nothing in it is secret).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::api_error::ApiError;
use crate::routes::AppState;

pub async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match state.relay.check().await {
        Ok(()) => Ok(axum::Json(json!({"status": "ok"}))),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason))
        }
    }
}

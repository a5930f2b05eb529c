//! The device endpoints, one per sync function:
//!
//! - `GET /v1/scopes/{scope}/schema`: `sync_schema`;
//! - `POST /v1/scopes/{scope}/changes`, body `{"since": ..., <select options>}`:
//!   `sync_select_changes_json`, answered with the changeset text as written;
//! - `POST /v1/scopes/{scope}/apply?replica=..&upload_id=..&respellings=true&seen=..`, body the
//!   changeset (or, as `APPLY_ENVELOPE`, `{"options": {...}, "changeset": {...}}`):
//!   `sync_apply_changes_json`;
//! - `POST /v1/scopes/{scope}/verify`, body the verify options: `sync_verify`.
//!
//! Each takes the device's bearer token, which the extension resolves.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Map, Value};
use tandem_core::options::APPLY_ENVELOPE;

use crate::api_error::ApiError;
use crate::auth::DeviceToken;
use crate::device_options::{capped, with_token};
use crate::metrics::{moved, Direction};
use crate::routes::AppState;

/// A JSON body, its refusals in the gateway's error form.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// A text body (a changeset), its refusals in the gateway's error form.
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(TextBody(String::from_request(request, state).await?))
    }
}

/// A query string, its refusals in the gateway's error form.
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct QueryOptions<T>(pub T);

/// JSON text answered as it is (never parsed again).
fn json_text(text: String) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], text)
}

pub async fn schema(State(state): State<AppState>, Path(scope): Path<String>, token: DeviceToken) -> Result<impl IntoResponse, ApiError> {
    let options = with_token(Map::new(), &token)?;
    Ok(json_text(state.relay.schema(&scope, &options).await?))
}

pub async fn changes(
    State(state): State<AppState>,
    Path(scope): Path<String>,
    token: DeviceToken,
    JsonBody(mut request): JsonBody<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let since = match request.remove("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(since)) => Some(since),
        Some(other) => {
            return Err(ApiError::bad_request(format!("\"since\" is {other}: pass the watermark the last changeset returned, or null")))
        }
    };
    let options = with_token(capped(request), &token)?;
    let changeset = state.relay.select_changes(&scope, since.as_deref(), &options).await?;
    moved(Direction::Down, &changeset);
    Ok(json_text(changeset))
}

/// The body is read only once the token is known to reach the scope
/// (one `sync_schema` call): decompressing up to `--max-body-bytes` for
/// anyone who sends a made-up token would let a few requests take
/// gigabytes of the gateway's memory.
pub async fn apply(
    State(state): State<AppState>,
    Path(scope): Path<String>,
    token: DeviceToken,
    QueryOptions(query): QueryOptions<BTreeMap<String, String>>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    state.relay.schema(&scope, &with_token(Map::new(), &token)?).await?;
    let enveloped = request.headers().get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(APPLY_ENVELOPE.as_bytes()));
    let TextBody(body) = TextBody::from_request(request, &state).await?;
    let mut options: Map<String, Value> = query.into_iter().map(|(k, v)| query_value(k, v)).collect();
    let changeset = match enveloped {
        false => body.as_str(),
        true => {
            let envelope: Envelope<'_> = serde_json::from_str(&body).map_err(|e| {
                ApiError::bad_request(format!(
                    "an upload sent as {APPLY_ENVELOPE} is {{\"options\": {{...}}, \"changeset\": {{...}}}}: {e}"
                ))
            })?;
            options.extend(envelope.options);
            envelope.changeset.get()
        }
    };
    let options = with_token(options, &token)?;
    let result = state.relay.apply_changes(&scope, changeset, &options).await?;
    moved(Direction::Up, changeset);
    Ok(json_text(result))
}

/// An upload with its options in the body (`APPLY_ENVELOPE`): a device's
/// options can outgrow a URL. The changeset goes on as the text it is.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(borrow)]
    changeset: &'a serde_json::value::RawValue,
}

/// A query parameter as the apply option it is: `respellings` a boolean
/// (`true` or `false`), `seen` the JSON of its object, the others text;
/// anything else goes as sent, for the extension to refuse.
fn query_value(key: String, value: String) -> (String, Value) {
    let value = match (key.as_str(), value.as_str()) {
        ("respellings", "true") => Value::Bool(true),
        ("respellings", "false") => Value::Bool(false),
        ("seen", json) => match serde_json::from_str::<Value>(json) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(value),
        },
        _ => Value::String(value),
    };
    (key, value)
}

/// One step of a device's verify; like an upload's, the body is read only
/// once the token is known to reach the scope (a fetch step lists keys).
pub async fn verify(
    State(state): State<AppState>,
    Path(scope): Path<String>,
    token: DeviceToken,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    state.relay.schema(&scope, &with_token(Map::new(), &token)?).await?;
    let JsonBody(options) = JsonBody::<Map<String, Value>>::from_request(request, &state).await?;
    let answer = state.relay.verify(&scope, &with_token(options, &token)?).await?;
    moved(Direction::Down, &answer);
    Ok(json_text(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_parameters_go_as_the_options_they_are() {
        assert_eq!(query_value("respellings".into(), "true".into()).1, json!(true));
        let seen = r#"{"watermark":"10:12:","echoes":["11"]}"#;
        assert_eq!(query_value("seen".into(), seen.into()).1, json!({"watermark": "10:12:", "echoes": ["11"]}));
        // Anything else goes as sent, for the extension to refuse.
        assert_eq!(query_value("seen".into(), "[1]".into()).1, json!("[1]"));
        assert_eq!(query_value("upload_id".into(), "{}".into()).1, json!("{}"));
    }
}

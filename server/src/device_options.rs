//! The options a device sends with a call, passed to the sync function with
//! its token added. Who the caller is and which rows it may reach come from
//! the token alone: a request naming parameters, a client or a token of its
//! own is refused. Everything else is the extension's to check.

use serde_json::{Map, Value};

use crate::api_error::ApiError;
use crate::auth::DeviceToken;

/// Options the token decides, never the request.
const FROM_THE_TOKEN: [&str; 3] = ["params", "token", "client_id"];

/// The most changeset bytes one answer of the gateway holds: a device may
/// ask for batches of up to 256 MB from PostgreSQL directly, but the
/// gateway holds each answer whole while it goes out, for every device at
/// once. A batch ends at this size (the device then asks for the next).
pub const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// A pull's options with `max_bytes` at most [`MAX_ANSWER_BYTES`].
pub fn capped(mut options: Map<String, Value>) -> Map<String, Value> {
    let asked = options.get("max_bytes").and_then(Value::as_u64);
    if asked.is_none_or(|bytes| bytes > MAX_ANSWER_BYTES) {
        options.insert("max_bytes".into(), Value::from(MAX_ANSWER_BYTES));
    }
    options
}

/// `options` with the device's token, as the sync functions take them.
pub fn with_token(mut options: Map<String, Value>, token: &DeviceToken) -> Result<String, ApiError> {
    if let Some(key) = FROM_THE_TOKEN.iter().find(|key| options.contains_key(**key)) {
        return Err(ApiError::bad_request(format!(
            "option \"{key}\" is not taken over HTTPS: the client and its filter parameters come from the token \
             (Authorization: Bearer); leave \"{key}\" out"
        )));
    }
    options.insert("token".into(), Value::String(token.0.clone()));
    Ok(Value::Object(options).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pull_answer_is_held_to_what_the_gateway_holds() {
        let Value::Object(asked) = json!({"max_bytes": 268435456}) else { unreachable!() };
        assert_eq!(capped(asked)["max_bytes"], MAX_ANSWER_BYTES);
        assert_eq!(capped(Map::new())["max_bytes"], MAX_ANSWER_BYTES);
        let Value::Object(asked) = json!({"max_bytes": 1000}) else { unreachable!() };
        assert_eq!(capped(asked)["max_bytes"], 1000);
    }

    #[test]
    fn the_token_decides_the_client_and_its_parameters() {
        let token = DeviceToken("tdm_c_0123".into());
        let Value::Object(options) = json!({"max_rows": 5}) else { unreachable!() };
        let sent: Value = serde_json::from_str(&with_token(options, &token).unwrap()).unwrap();
        assert_eq!(sent, json!({"max_rows": 5, "token": "tdm_c_0123"}));
        for key in FROM_THE_TOKEN {
            let mut options = Map::new();
            options.insert(key.into(), json!(1));
            let error = with_token(options, &token).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains(key) && error.message.contains("token"), "{}", error.message);
        }
    }
}

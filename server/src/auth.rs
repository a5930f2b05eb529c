//! The device's token, from `Authorization: Bearer <token>`. A request
//! without a well-formed one is refused before the database is touched; the
//! extension decides whether the token is valid and what it may reach.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::api_error::ApiError;

/// A token in the form `sync_register_client` issues.
pub struct DeviceToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DeviceToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "no token: send the device's token (from sync_register_client) as Authorization: Bearer <token>",
            ));
        };
        let text = value.to_str().unwrap_or_default();
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::unauthorized("the Authorization header must be Bearer <token>")),
        };
        if tandem_core::identity::token_client_id(token).is_none() {
            return Err(ApiError::unauthorized(
                "the bearer token is not one sync_register_client issued (tdm_<client>_<secret>): check the device's token",
            ));
        }
        Ok(DeviceToken(token.to_string()))
    }
}

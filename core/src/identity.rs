//! Client tokens: `tdm_<client id>_<secret>`. The server keeps only the
//! token's SHA-256; the client id in it lets a client know whom it syncs as
//! without asking the server.

/// The client id a token names, if it has Tandem's form.
pub fn token_client_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("tdm_")?;
    let (client_id, secret) = rest.rsplit_once('_')?;
    (!client_id.is_empty() && secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit())).then_some(client_id)
}

/// A token for `client_id` from 32 random bytes.
pub fn new_token(client_id: &str, secret: &[u8; 32]) -> String {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("tdm_{client_id}_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_client() {
        let token = new_token("0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11", &[7; 32]);
        assert_eq!(token_client_id(&token), Some("0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11"));
        assert_eq!(token_client_id("tdm_x_short"), None);
        assert_eq!(token_client_id("bearer-something"), None);
    }
}

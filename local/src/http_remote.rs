//! The server through Tandem's HTTPS gateway (`tandem serve`): the same
//! three calls as a `postgres://` remote, each one request, with the token
//! as the bearer and never in the options. Responses come compressed when
//! the gateway compresses them (gzip, zstd); uploads go up in zstd. The
//! gateway's errors become the same [`RemoteError`]s a direct connection
//! gives. A watch waits on the gateway's event stream, kept open across
//! waits and opened again when it drops.

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value};
use tandem_core::apply_result::ApplyResult;
use tandem_core::dsn::redacted;
use tandem_core::options::{ApplyOptions, SelectOptions, APPLY_ENVELOPE};
use tandem_core::schema::Schema;
use tandem_core::verify::VerifyOptions;

use crate::error::RemoteError;
use crate::http_events::EventStream;
use crate::remote::{Capabilities, LastSchema, Remote};

/// Uploads at least this large go up compressed.
const COMPRESS_FROM: usize = 1024;
/// An upload's options longer than this go in its body (`APPLY_ENVELOPE`):
/// proxies refuse URLs past a few kilobytes, and the HTTP client past 64 KB
/// (the fault suite: a device's `seen` with thousands of deletes it did not
/// take failed every upload before it left).
const QUERY_BYTES: usize = 4096;

/// Options the token carries: never sent beside it.
const FROM_THE_TOKEN: [&str; 3] = ["token", "client_id", "params"];

/// A gateway at an `https://` URL (or `http://` on this host).
pub struct HttpRemote {
    client: Client,
    base: Url,
    shown: String,
    server_id: Option<String>,
    moved_from: Vec<String>,
    capabilities: Capabilities,
    last_schema: LastSchema,
    /// The event stream a watch waits on, and its scope.
    events: Option<(String, EventStream)>,
}

/// The body of an answer other than success.
#[derive(Deserialize)]
struct ErrorBody {
    error: GatewayError,
}

#[derive(Deserialize)]
struct GatewayError {
    sqlstate: Option<String>,
    message: String,
    #[serde(default)]
    detail: Option<Value>,
}

/// Whether `url` names this machine, where plain HTTP crosses no network.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl HttpRemote {
    /// A client for the gateway at `url`; its certificate must chain to
    /// `ca_cert` (a PEM file) or to one of the system's roots, and name the
    /// host. Nothing is sent until the first call.
    pub fn connect(url: &str, ca_cert: Option<&Path>) -> Result<Self, RemoteError> {
        let shown = redacted(url);
        let mut base = Url::parse(url).map_err(|e| RemoteError::Config(format!("{shown} is not a URL: {e}")))?;
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(&base) => {}
            "http" => {
                return Err(RemoteError::Config(format!(
                    "{shown}: plain http:// is only for a gateway on this machine (localhost); use https://, so the token \
                     does not cross the network in clear"
                )))
            }
            _ => return Err(RemoteError::Config(format!("{shown} is not an http(s):// URL"))),
        }
        if base.query().is_some() || !base.username().is_empty() {
            return Err(RemoteError::Config(format!(
                "{shown}: a gateway URL is https://host:port[/path], without a user or query (the token goes in --token)"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let tls = tandem_tls::https_client_config(ca_cert)?;
        let client = Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            // A large batch may take a while; a dead peer is found by keepalive.
            .timeout(None)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Config(format!("HTTP client setup: {e}")))?;
        Ok(HttpRemote {
            client,
            base,
            shown,
            server_id: None,
            moved_from: Vec::new(),
            capabilities: Capabilities::default(),
            last_schema: LastSchema::default(),
            events: None,
        })
    }

    fn endpoint(&self, scope: &str, call: &str) -> Result<Url, RemoteError> {
        let mut url = self.base.join("v1/scopes/").map_err(|e| RemoteError::Config(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| RemoteError::Config(format!("{} cannot take a path", self.shown)))?
            .pop_if_empty()
            .extend([scope, call]);
        Ok(url)
    }

    /// Sends a request with the token; the answer of a success, or the
    /// error the gateway answered with.
    fn answer(&self, scope: &str, token: Option<&str>, request: RequestBuilder) -> Result<reqwest::blocking::Response, RemoteError> {
        let token = token.ok_or_else(|| {
            RemoteError::Config(format!(
                "{} is a gateway: it takes a device by its token alone; pass --token (option \"token\") as \
                 sync_register_client issued it",
                self.shown
            ))
        })?;
        let response = request.bearer_auth(token).send().map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            let text = response.text().map_err(|e| self.transport_error(&e))?;
            Err(self.error(scope, status, &text))
        }
    }

    /// [`HttpRemote::answer`]'s body, as text.
    fn send(&self, scope: &str, token: Option<&str>, request: RequestBuilder) -> Result<String, RemoteError> {
        // Bytes, then strict UTF-8: `text()` would read the charset and
        // replace invalid bytes, a second pass over every batch for nothing.
        let bytes = self.answer(scope, token, request)?.bytes().map_err(|e| self.transport_error(&e))?;
        String::from_utf8(bytes.into()).map_err(|e| RemoteError::Protocol(format!("the gateway's answer is not UTF-8: {e}")))
    }

    /// Opens the scope's event stream; refusals are those of the other
    /// endpoints (a revoked token: refused, check the token).
    fn subscribe(&mut self, scope: &str, token: Option<&str>) -> Result<(), RemoteError> {
        self.events = None;
        let request = self.client.get(self.endpoint(scope, "events")?).header(ACCEPT, "text/event-stream");
        let stream = EventStream::start(self.answer(scope, token, request)?);
        self.events = Some((scope.to_string(), stream));
        Ok(())
    }

    /// A request that got no answer: TLS refused, or nobody listening.
    fn transport_error(&self, error: &reqwest::Error) -> RemoteError {
        let mut text = tandem_core::error::with_causes(error);
        // The request's query (an upload's options, its list of past
        // uploads) buries the reason at the end of a kilobyte (helper 99).
        if let Some(sent) = error.url().filter(|sent| sent.query().is_some()) {
            let mut bare = sent.clone();
            bare.set_query(None);
            text = text.replace(sent.as_str(), bare.as_str());
        }
        let url = self.shown.clone();
        // A connection cut (the gateway died, a proxy closed it) also
        // speaks of TLS, as rustls notices the missing close_notify: that
        // is a lost network, to wait out, not a refusal.
        let cut = ["close_notify", "connection closed", "connection reset", "broken pipe", "unexpected eof"]
            .iter()
            .any(|sign| text.to_ascii_lowercase().contains(sign));
        let tls = text.contains("certificate") || text.contains("TLS") || text.contains("tls") || text.contains("handshake");
        if tls && !cut {
            return RemoteError::Refused {
                url,
                reason: format!("TLS failed: {text} (check the gateway's certificate against --ca-cert, option \"ca_cert\")"),
            };
        }
        // A TLS listener's first bytes read as no HTTP version at all.
        if self.base.scheme() == "http" && text.contains("invalid HTTP version") {
            return RemoteError::Refused { url, reason: format!("{text}: the gateway there speaks TLS; use an https:// URL") };
        }
        let host = self.base.host_str().unwrap_or_default();
        let port = self.base.port_or_known_default().map(|p| p.to_string()).unwrap_or_default();
        RemoteError::Unreachable { url, reason: format!("{text} (is the gateway running and listening at host {host} port {port}?)") }
    }

    /// The gateway's answer as the error a direct connection would give.
    fn error(&self, scope: &str, status: StatusCode, text: &str) -> RemoteError {
        let url = self.shown.clone();
        let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(text) else {
            let reason = format!("HTTP {status}: {}", tandem_core::error::shorten(text, 200));
            return match status {
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                    RemoteError::Unreachable { url, reason }
                }
                StatusCode::PAYLOAD_TOO_LARGE => RemoteError::TooLarge(reason),
                _ => RemoteError::Protocol(reason),
            };
        };
        let detail = match &error.detail {
            Some(Value::String(text)) => Some(text.clone()),
            Some(value) => Some(value.to_string()),
            None => None,
        };
        let sqlstate = error.sqlstate.unwrap_or_default();
        if let Some(known) = RemoteError::from_server(&sqlstate, &error.message, detail.as_deref()) {
            return known;
        }
        match status {
            StatusCode::NOT_FOUND if sqlstate == "42704" && error.message.starts_with("unknown scope") => {
                RemoteError::UnknownScope(scope.to_string())
            }
            // The server's own word on a token says what to do; the
            // gateway's (no token, or not a token's form) gets the hint.
            StatusCode::UNAUTHORIZED if !sqlstate.is_empty() => RemoteError::Refused { url, reason: error.message },
            StatusCode::UNAUTHORIZED => RemoteError::Refused {
                url,
                reason: format!(
                    "{} (check the token: --token or TANDEM_TOKEN, as sync_register_client or sync_rotate_token issued it)",
                    error.message
                ),
            },
            // The gateway's own refusal; a call's error (a privilege the
            // server's code lacked) reads as it does over a direct connection.
            StatusCode::FORBIDDEN if sqlstate.is_empty() => RemoteError::Refused { url, reason: error.message },
            StatusCode::PAYLOAD_TOO_LARGE => RemoteError::TooLarge(error.message),
            // A deadlock or serialization failure (503): the call's own
            // error, as over a direct connection; the next try goes through.
            _ if sqlstate.starts_with("40") => RemoteError::Server { sqlstate, message: error.message },
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                RemoteError::Unreachable { url, reason: error.message }
            }
            _ if sqlstate == "42883" => RemoteError::ExtensionMissing { url },
            _ if !sqlstate.is_empty() => RemoteError::Server { sqlstate, message: error.message },
            _ => RemoteError::Protocol(format!("HTTP {status}: {}", error.message)),
        }
    }
}

/// `options` as JSON, without what the token carries.
fn without_token(options: &impl serde::Serialize) -> Result<Map<String, Value>, RemoteError> {
    match serde_json::to_value(options) {
        Ok(Value::Object(mut map)) => {
            for key in FROM_THE_TOKEN {
                map.remove(key);
            }
            Ok(map)
        }
        Ok(other) => Err(RemoteError::Protocol(format!("options serialize as {other}"))),
        Err(e) => Err(RemoteError::Protocol(format!("options: {e}"))),
    }
}

impl Remote for HttpRemote {
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<Schema, RemoteError> {
        let request = self.client.get(self.endpoint(scope, "schema")?);
        let answer = self.last_schema.read(self.send(scope, token, request)?)?;
        self.server_id = answer.server_id;
        self.moved_from = answer.moved_from;
        self.capabilities = answer.capabilities;
        Ok(answer.schema)
    }

    fn server_id(&self) -> Option<String> {
        self.server_id.clone()
    }

    fn moved_from(&self) -> Vec<String> {
        self.moved_from.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Waits on the gateway's event stream, opened by the first wait (its
    /// first event comes at once) and kept open across waits. A stream
    /// that ends is opened again once at once; when that fails, the error
    /// says why (unreachable: the watch backs off and tries again).
    fn wait_for_change(&mut self, scope: &str, token: Option<&str>, timeout: Duration) -> Result<bool, RemoteError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut reopened = false;
        loop {
            if self.events.as_ref().is_none_or(|(watched, _)| watched != scope) {
                self.subscribe(scope, token)?;
            }
            let Some((_, stream)) = self.events.as_mut() else { continue };
            match stream.wait(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(changed) => return Ok(changed),
                Err(reason) if reopened => {
                    self.events = None;
                    return Err(RemoteError::Unreachable { url: self.shown.clone(), reason });
                }
                Err(_) => {
                    self.events = None;
                    reopened = true;
                }
            }
        }
    }

    fn reconnect(&mut self) -> Result<(), RemoteError> {
        self.events = None;
        Ok(())
    }

    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        let mut body = without_token(options)?;
        body.insert("since".into(), since.map_or(Value::Null, |s| Value::String(s.to_string())));
        let request = self
            .client
            .post(self.endpoint(scope, "changes")?)
            .header(CONTENT_TYPE, "application/json")
            .body(Value::Object(body).to_string());
        self.send(scope, options.token.as_deref(), request)
    }

    fn verify(&mut self, scope: &str, options: &VerifyOptions) -> Result<String, RemoteError> {
        let body = Value::Object(without_token(options)?).to_string();
        let request = self.client.post(self.endpoint(scope, "verify")?).header(CONTENT_TYPE, "application/json").body(body);
        self.send(scope, options.token.as_deref(), request)
    }

    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        let token = options.token.as_deref();
        let options = without_token(options)?;
        let query: Vec<(String, String)> = options
            .iter()
            .filter_map(|(key, value)| match value {
                Value::String(text) => Some((key.clone(), text.clone())),
                Value::Null => None,
                other => Some((key.clone(), other.to_string())),
            })
            .collect();
        // Percent-encoding may triple a query's text.
        let query_bytes: usize = query.iter().map(|(key, value)| key.len() + 3 * value.len() + 2).sum();
        let endpoint = self.endpoint(scope, "apply")?;
        let (mut request, body) = match query_bytes > QUERY_BYTES {
            false => (self.client.post(endpoint).query(&query).header(CONTENT_TYPE, "application/json"), changeset.to_string()),
            true => (
                self.client.post(endpoint).header(CONTENT_TYPE, APPLY_ENVELOPE),
                format!("{{\"options\":{},\"changeset\":{changeset}}}", Value::Object(options)),
            ),
        };
        request = if body.len() >= COMPRESS_FROM {
            let compressed = zstd::bulk::compress(body.as_bytes(), 3).map_err(|e| RemoteError::Protocol(format!("zstd: {e}")))?;
            request.header(CONTENT_ENCODING, "zstd").body(compressed)
        } else {
            request.body(body)
        };
        let text = self.send(scope, token, request)?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol(format!("unreadable apply result: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine() {
        for url in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2"] {
            assert!(HttpRemote::connect(url, None).is_ok(), "{url}");
        }
        let error = HttpRemote::connect("http://db.example.com:8080", None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("https://") && error.contains("localhost"), "{error}");
        let error = HttpRemote::connect("https://u:pw@gw.example.com", None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("without a user") && !error.contains("pw"), "{error}");
    }

    #[test]
    fn a_lock_the_server_gave_up_on_is_said_as_such() {
        let remote = HttpRemote::connect("http://127.0.0.1:1", None).unwrap();
        let body = r#"{"error": {"sqlstate": "55P03", "message": "canceling statement due to lock timeout", "detail": null}}"#;
        let error = remote.error("crm", StatusCode::SERVICE_UNAVAILABLE, body);
        assert!(matches!(error, RemoteError::LockWait(_)), "{error}");
    }

    #[test]
    fn an_unreachable_gateway_is_told_without_the_requests_query() {
        let mut remote = HttpRemote::connect("http://127.0.0.1:1", None).unwrap();
        let seen = tandem_core::options::Seen { watermark: "10:10:".into(), echoes: vec!["12345".into(); 50], ..Default::default() };
        let options = ApplyOptions { seen: Some(seen), upload_id: Some("u".into()), token: Some("tdm_c_s".into()), ..Default::default() };
        let error = remote.apply_changes("crm", r#"{"origin": "c", "tables": []}"#, &options).unwrap_err().to_string();
        assert!(error.contains("/v1/scopes/crm/apply") && !error.contains("12345"), "{error}");
        assert!(error.contains("is the gateway running"), "{error}");
    }

    #[test]
    fn a_deadlock_is_the_servers_error_not_an_unreachable_gateway() {
        let remote = HttpRemote::connect("http://127.0.0.1:1", None).unwrap();
        let body = r#"{"error": {"sqlstate": "40P01", "message": "deadlock detected", "detail": null}}"#;
        let error = remote.error("crm", StatusCode::SERVICE_UNAVAILABLE, body);
        assert!(matches!(&error, RemoteError::Server { sqlstate, .. } if sqlstate == "40P01"), "{error}");
        assert!(error.to_string().ends_with("nothing is lost, sync again"), "says what to do: {error}");
    }

    #[test]
    fn a_privilege_error_of_a_call_is_the_servers_not_a_refused_connection() {
        let remote = HttpRemote::connect("http://127.0.0.1:1", None).unwrap();
        let body = r#"{"error": {"sqlstate": "42501", "message": "permission denied for table orders", "detail": null}}"#;
        let error = remote.error("crm", StatusCode::FORBIDDEN, body);
        assert!(matches!(&error, RemoteError::Server { sqlstate, .. } if sqlstate == "42501"), "{error}");
        assert!(!error.to_string().contains("refused:"), "{error}");
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let remote = HttpRemote::connect("https://gw.example.com:8443/tandem", None).unwrap();
        assert_eq!(remote.endpoint("crm", "changes").unwrap().as_str(), "https://gw.example.com:8443/tandem/v1/scopes/crm/changes");
        let remote = HttpRemote::connect("https://gw.example.com", None).unwrap();
        assert_eq!(remote.endpoint("a b", "schema").unwrap().as_str(), "https://gw.example.com/v1/scopes/a%20b/schema");
    }

    #[test]
    fn the_token_never_travels_in_the_options() {
        let options = SelectOptions {
            token: Some("tdm_x".into()),
            client_id: Some("c".into()),
            params: Some(Default::default()),
            max_rows: Some(5),
            ..Default::default()
        };
        let sent = without_token(&options).unwrap();
        assert_eq!(Value::Object(sent), serde_json::json!({"max_rows": 5}));
    }
}

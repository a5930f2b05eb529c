//! The server, as the sync agent sees it: three calls, and a wait for "the
//! scope saw a commit". `postgres://` remotes call the extension's SQL
//! functions directly and `LISTEN` on a connection of their own,
//! `https://` remotes go through the gateway (`crate::http_remote`); other
//! transports plug in behind the same trait.

use std::path::Path;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};
use tandem_core::apply_result::ApplyResult;
use tandem_core::dsn::redacted;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_core::schema::Schema;
use tandem_core::sql::calls;
use tandem_core::verify::VerifyOptions;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::RemoteError;
use crate::http_remote::HttpRemote;
use tandem_tls::{SslMode, TlsSettings};

/// `Send`, so a round can fetch the next batch while it stores this one.
pub trait Remote: Send {
    /// `sync_schema(scope, {"token": token})` on the server.
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<Schema, RemoteError>;
    /// `sync_select_changes(scope, since, options)`: changeset JSON text.
    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError>;
    /// `sync_apply_changes(scope, changeset, options)`.
    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError>;
    /// One step of `sync_verify(scope, options)`: the answer's JSON text.
    fn verify(&mut self, scope: &str, options: &VerifyOptions) -> Result<String, RemoteError>;
    /// The server's id (and its database's), as the last `schema` call
    /// gave it; `None` for a transport that does not say.
    fn server_id(&self) -> Option<String> {
        None
    }
    /// The ids the server had before it was restored into another cluster
    /// (as the last `schema` call gave them): a file that synced with one
    /// of them pulls again by itself.
    fn moved_from(&self) -> Vec<String> {
        Vec::new()
    }
    /// What the server takes beyond its first release, as the last
    /// `schema` call said: only then may a call ask for it, which an older
    /// server would refuse as an unknown option.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// Waits up to `timeout` for the server to say that `scope` saw a
    /// commit: `true` means pull now. It may also say `true` when it cannot
    /// know (a connection just made may have missed one); a transport that
    /// cannot tell just sleeps and says `false`, so a watch polls.
    fn wait_for_change(&mut self, scope: &str, token: Option<&str>, timeout: Duration) -> Result<bool, RemoteError> {
        let _ = (scope, token);
        std::thread::sleep(timeout);
        Ok(false)
    }
    /// Makes the connection again after a network error (a watch calls
    /// it before going on); a transport that reconnects by itself does
    /// nothing.
    fn reconnect(&mut self) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// The channel the extension's triggers notify, with the scope's name.
pub const CHANGES_CHANNEL: &str = "tandem";

/// How long a `LISTEN` connection may stay silent before it is checked.
const LISTEN_CHECK_EVERY: Duration = Duration::from_secs(30);

/// A direct connection to PostgreSQL with the tandem extension.
pub struct PostgresRemote {
    client: Client,
    url: String,
    server_id: Option<String>,
    moved_from: Vec<String>,
    capabilities: Capabilities,
    last_schema: LastSchema,
    config: Config,
    tls: TlsSettings,
    /// The `LISTEN` connection, made by the first wait.
    listener: Option<Listener>,
}

/// A connection that only listens, and when it was last known alive.
struct Listener {
    client: Client,
    checked: Instant,
}

/// Opens a connection as `config` and `tls` say.
fn open_client(shown: &str, config: &Config, tls: &TlsSettings) -> Result<Client, RemoteError> {
    let connected = match tls.mode {
        SslMode::Disable => config.connect(NoTls),
        _ => config.connect(MakeRustlsConnect::new(tls.client_config()?)),
    };
    connected.map_err(|e| connect_error(shown, config, tls, &e))
}

impl PostgresRemote {
    /// Connects over TLS as the URL's `sslmode` says (see [`tandem_tls`]);
    /// `ca_cert` is a root certificate file, as `sslrootcert`.
    pub fn connect(url: &str, ca_cert: Option<&Path>) -> Result<Self, RemoteError> {
        let shown = redacted(url);
        let (rest, tls) = TlsSettings::from_url_or_env(url, ca_cert)?;
        let mut config: Config = rest.parse().map_err(|e| RemoteError::Config(format!("{shown} is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("tandem");
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        config.ssl_mode(tls.postgres_mode());
        let client = open_client(&shown, &config, &tls)?;
        Ok(PostgresRemote {
            client,
            url: shown,
            server_id: None,
            moved_from: Vec::new(),
            capabilities: Capabilities::default(),
            last_schema: LastSchema::default(),
            config,
            tls,
            listener: None,
        })
    }

    fn lost(&self, error: &postgres::Error) -> RemoteError {
        RemoteError::Unreachable { url: self.url.clone(), reason: format!("the LISTEN connection failed: {error}") }
    }

    /// The `LISTEN` connection; `true` when it was just made (commits
    /// before it were not heard).
    fn listening(&mut self) -> Result<(&mut Listener, bool), RemoteError> {
        let fresh = self.listener.is_none();
        if fresh {
            let mut client = open_client(&self.url, &self.config, &self.tls)?;
            client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}")).map_err(|e| self.lost(&e))?;
            self.listener = Some(Listener { client, checked: Instant::now() });
        }
        match self.listener.as_mut() {
            Some(listener) => Ok((listener, fresh)),
            None => Err(RemoteError::Protocol("the LISTEN connection vanished".into())),
        }
    }

    fn error(&mut self, scope: &str, error: postgres::Error) -> RemoteError {
        let Some(db) = error.as_db_error() else {
            return RemoteError::Unreachable { url: self.url.clone(), reason: error.to_string() };
        };
        let sqlstate = db.code().code().to_string();
        if sqlstate == "42883" && db.message().contains("sync_") {
            return self.missing_functions();
        }
        if sqlstate == "42704" && db.message().starts_with("unknown scope") {
            return RemoteError::UnknownScope(scope.to_string());
        }
        RemoteError::from_server(&sqlstate, db.message(), db.detail())
            .unwrap_or_else(|| RemoteError::Server { sqlstate, message: db.message().to_string() })
    }

    /// Why the `sync_*` functions were not found: the extension is not
    /// in the database, or it is in a schema the session's `search_path`
    /// leaves out (a role whose path hides `public`).
    fn missing_functions(&mut self) -> RemoteError {
        let url = self.url.clone();
        // On the path, the functions are missing for a moment (a restore or
        // an upgrade under way): the extension counts as missing.
        let found = self.client.query_opt(
            "SELECT n.nspname::text, pg_catalog.current_setting('search_path') FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'tandem' AND n.nspname <> ALL (pg_catalog.current_schemas(true))",
            &[],
        );
        match found {
            Ok(Some(row)) => match (row.try_get::<_, String>(0), row.try_get::<_, String>(1)) {
                (Ok(schema), Ok(search_path)) => RemoteError::ExtensionOffPath { url, schema, search_path },
                _ => RemoteError::ExtensionMissing { url },
            },
            _ => RemoteError::ExtensionMissing { url },
        }
    }

    fn one_text(&mut self, scope: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<String, RemoteError> {
        match self.client.query_one(sql, params) {
            Ok(row) => row
                .try_get::<_, Option<String>>(0)
                .map_err(|e| RemoteError::Protocol(e.to_string()))?
                .ok_or_else(|| RemoteError::Protocol(format!("{sql} returned NULL"))),
            Err(e) => Err(self.error(scope, e)),
        }
    }
}

/// Why a connection failed, naming what to check: the server refused us
/// (authentication, database, TLS) or nobody answered (host, port).
fn connect_error(url: &str, config: &Config, tls: &TlsSettings, error: &postgres::Error) -> RemoteError {
    let url = url.to_string();
    let user = config.get_user().unwrap_or("(none)");
    if let Some(db) = error.as_db_error() {
        let reason = match db.code().code() {
            "28P01" | "28000" => {
                format!("authentication failed for user \"{user}\": {} (check the user, password and pg_hba.conf)", db.message())
            }
            "3D000" => format!("{} (create the database, or fix the URL's database)", db.message()),
            _ => db.message().to_string(),
        };
        return RemoteError::Refused { url, reason };
    }
    let text = tandem_core::error::with_causes(error);
    if text.contains("password missing") {
        return RemoteError::Refused {
            url,
            reason: format!("the server asks user \"{user}\" for a password and none was given: put it in PGPASSWORD (or in the URL)"),
        };
    }
    // tokio-postgres says "TLS" (handshake, server without TLS); rustls
    // says "certificate".
    if text.contains("TLS") || text.contains("certificate") {
        return RemoteError::Refused {
            url,
            reason: format!(
                "TLS failed (sslmode {}): {text} (check the server's certificate against --ca-cert/sslrootcert, \
                 or that the server has ssl = on)",
                tls.mode
            ),
        };
    }
    let hosts = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ports = config.get_ports().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    RemoteError::Unreachable { url, reason: format!("{text} (is PostgreSQL running and listening at host {hosts} port {ports}?)") }
}

/// What `sync_schema` answers: the scope's schema, the server's id beside
/// it, and the ids it had before a restore into another cluster.
#[derive(Clone)]
pub(crate) struct SchemaAnswer {
    pub schema: Schema,
    pub server_id: Option<String>,
    pub moved_from: Vec<String>,
    pub capabilities: Capabilities,
}

/// What a server's `sync_schema` says it takes, beyond its first release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// It marks a delete whose key it still holds under another text, for
    /// a pull that asks (`respellings`).
    pub respellings: bool,
    /// An upload may say what its file had received (`seen`).
    pub seen: bool,
    /// ... and which keys it kept beside deletes it did not take
    /// (`seen.kept`),
    pub seen_kept: bool,
    /// ... each with the version of that delete.
    pub kept_versions: bool,
}

/// The last `sync_schema` answer a transport read, with its text: a round
/// asks for the schema every time and it seldom changes, and reading a
/// wide scope's answer again cost a sixth of an idle round.
#[derive(Default)]
pub(crate) struct LastSchema(Option<(String, SchemaAnswer)>);

impl LastSchema {
    /// The answer in `text`, read again only if it differs from the last.
    pub(crate) fn read(&mut self, text: String) -> Result<SchemaAnswer, RemoteError> {
        if let Some((seen, answer)) = &self.0 {
            if *seen == text {
                return Ok(answer.clone());
            }
        }
        let answer = schema_answer(&text)?;
        self.0 = Some((text, answer.clone()));
        Ok(answer)
    }
}

/// Reads `sync_schema`'s answer, as both transports receive it.
fn schema_answer(text: &str) -> Result<SchemaAnswer, RemoteError> {
    let unreadable = |e: serde_json::Error| RemoteError::Protocol(format!("unreadable schema: {e}"));
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(unreadable)?;
    let mut take = |name: &str| value.as_object_mut().and_then(|o| o.remove(name));
    let (server_id, moved_from) = (take("server_id"), take("moved_from"));
    let (respellings, seen, seen_kept, kept_versions) = (take("respellings"), take("seen"), take("seen_kept"), take("kept_versions"));
    let moved_from = match moved_from {
        Some(ids) => serde_json::from_value(ids).map_err(unreadable)?,
        None => Vec::new(),
    };
    let server_id = server_id.and_then(|v| v.as_str().map(str::to_string));
    let says = |flag: Option<serde_json::Value>| flag.and_then(|v| v.as_bool()).unwrap_or(false);
    let capabilities =
        Capabilities { respellings: says(respellings), seen: says(seen), seen_kept: says(seen_kept), kept_versions: says(kept_versions) };
    Ok(SchemaAnswer { schema: serde_json::from_value(value).map_err(unreadable)?, server_id, moved_from, capabilities })
}

fn options_text(options: &impl serde::Serialize) -> Result<String, RemoteError> {
    serde_json::to_string(options).map_err(|e| RemoteError::Protocol(format!("options: {e}")))
}

impl Remote for PostgresRemote {
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<Schema, RemoteError> {
        let options = serde_json::json!({ "token": token }).to_string();
        let text = self.one_text(scope, calls::SCHEMA, &[&scope, &options])?;
        let answer = self.last_schema.read(text)?;
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

    /// `LISTEN tandem` on a connection of its own (any role that may
    /// connect may listen; no token is needed to hear which scope saw a
    /// commit), waiting for a notification naming `scope`.
    fn wait_for_change(&mut self, scope: &str, _token: Option<&str>, timeout: Duration) -> Result<bool, RemoteError> {
        let deadline = Instant::now() + timeout;
        let (listener, fresh) = self.listening()?;
        if fresh {
            return Ok(true);
        }
        let heard = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = listener.client.notifications().timeout_iter(left).next();
            match next {
                Ok(Some(note)) if note.channel() == CHANGES_CHANNEL && note.payload() == scope => break Ok(true),
                Ok(Some(_)) => continue,
                Ok(None) if listener.client.is_closed() => break Err(None),
                Ok(None) => {
                    // A dead peer sends no error: ask now and then.
                    if listener.checked.elapsed() >= LISTEN_CHECK_EVERY {
                        if let Err(e) = listener.client.simple_query("SELECT 1") {
                            break Err(Some(e));
                        }
                        listener.checked = Instant::now();
                    }
                    break Ok(false);
                }
                Err(e) => break Err(Some(e)),
            }
        };
        match heard {
            Ok(heard) => Ok(heard),
            Err(error) => {
                self.listener = None;
                Err(match error {
                    Some(e) => self.lost(&e),
                    None => RemoteError::Unreachable { url: self.url.clone(), reason: "the LISTEN connection was closed".into() },
                })
            }
        }
    }

    fn reconnect(&mut self) -> Result<(), RemoteError> {
        self.listener = None;
        self.client = open_client(&self.url, &self.config, &self.tls)?;
        Ok(())
    }

    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        let options = options_text(options)?;
        self.one_text(scope, calls::SELECT_CHANGES, &[&scope, &since, &options])
    }

    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        let options = options_text(options)?;
        let text = self.one_text(scope, calls::APPLY_CHANGES, &[&scope, &changeset, &options])?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol(format!("unreadable apply result: {e}")))
    }

    fn verify(&mut self, scope: &str, options: &VerifyOptions) -> Result<String, RemoteError> {
        let options = options_text(options)?;
        self.one_text(scope, calls::VERIFY, &[&scope, &options])
    }
}

/// Opens the remote a URL names: `postgres://` (or `postgresql://`) for a
/// direct connection, `https://` for the gateway (`http://` only on this
/// machine).
pub fn open(url: &str, ca_cert: Option<&str>) -> Result<Box<dyn Remote>, RemoteError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresRemote::connect(url, ca_cert.map(Path::new))?))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(Box::new(HttpRemote::connect(url, ca_cert.map(Path::new))?))
    } else {
        Err(RemoteError::Config(format!(
            "{} is not a remote Tandem can sync with: use postgres://user@host:port/database (or postgresql://), \
             or https://host:port for a gateway (tandem serve)",
            redacted(url)
        )))
    }
}

//! PostgreSQL connection strings, in either of libpq's forms (a
//! `postgres://` URL, or `key=value` pairs): the demo, the benchmark and
//! the tests create databases of their own next to the one they are
//! pointed at, and every message shows a connection string without its
//! password. URLs are read by the `url` crate, as WHATWG parses them (a
//! password holding `@` or `:` included).

use url::Url;

/// `dsn` with its database replaced by `database`.
pub fn with_database(dsn: &str, database: &str) -> String {
    match Url::parse(dsn) {
        Ok(mut url) if url.has_host() => {
            url.set_path(&format!("/{database}"));
            url.to_string()
        }
        _ => {
            let mut pairs: Vec<String> = dsn.split_whitespace().filter(|p| !p.starts_with("dbname=")).map(str::to_string).collect();
            pairs.push(format!("dbname={database}"));
            pairs.join(" ")
        }
    }
}

/// The connection string without its passwords, for messages: the
/// user-info password of a URL, a `password=` query parameter, and the
/// `password=` of a `key=value` connection string. A URL that does not
/// parse is not shown at all (its password could be anywhere in it).
pub fn redacted(dsn: &str) -> String {
    if !dsn.contains("://") {
        return dsn.split(' ').map(|part| if part.starts_with("password=") { "password=***" } else { part }).collect::<Vec<_>>().join(" ");
    }
    let Ok(mut url) = Url::parse(dsn) else {
        return "(a connection URL that does not parse)".to_string();
    };
    let in_query = url.query().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("password=")));
    if url.password().is_none() && !in_query {
        // As written: nothing to hide (and no normalizing, such as a
        // trailing slash on an https URL).
        return dsn.to_string();
    }
    if url.password().is_some() {
        // Only a URL without a host has no password to set, and this one has one.
        let _ = url.set_password(Some("***"));
    }
    if let Some(query) = url.query().map(str::to_string) {
        let pairs: Vec<&str> = query.split('&').map(|pair| if pair.starts_with("password=") { "password=***" } else { pair }).collect();
        url.set_query(Some(&pairs.join("&")));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgresql://u:p%40ss@h/db", "x"), "postgresql://u:p%40ss@h/x");
    }

    #[test]
    fn replaces_the_database_of_key_value_pairs() {
        assert_eq!(with_database("host=h user=u dbname=postgres", "x"), "host=h user=u dbname=x");
        assert_eq!(with_database("host=h user=u", "x"), "host=h user=u dbname=x");
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redacted("postgres://u@h/db?sslmode=require&password=secret"), "postgres://u@h/db?sslmode=require&password=***");
        assert_eq!(redacted("postgres://u:pw@h/db?password=secret"), "postgres://u:***@h/db?password=***");
        assert_eq!(redacted("host=h password=secret user=u"), "host=h password=*** user=u");
        assert_eq!(redacted("https://gw.example.com:8443/tandem"), "https://gw.example.com:8443/tandem");
        assert_eq!(redacted("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    /// A password written raw, with `@` and `:` in it, is all hidden.
    #[test]
    fn hides_a_password_holding_separators() {
        let shown = redacted("postgres://u:p@ss:w0rd@h:5432/db");
        assert!(!shown.contains("ss") && !shown.contains("w0rd"), "{shown}");
        assert!(shown.ends_with("@h:5432/db"), "{shown}");
    }
}

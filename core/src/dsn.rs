//! PostgreSQL connection URLs: the demo, the benchmark and the tests create
//! databases of their own next to the one they are pointed at.

/// `url` (`postgres://user@host:port/db?options`) with its database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// The connection string without its passwords, for messages: the
/// user-info password of a URL, a `password=` query parameter, and the
/// `password=` of a `key=value` connection string.
pub fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // key=value form: `host=h password=secret user=u`.
        return url.split(' ').map(|part| if part.starts_with("password=") { "password=***" } else { part }).collect::<Vec<_>>().join(" ");
    };
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], Some(&url[q + 1..])),
        None => (url, None),
    };
    let rest = &base[scheme_end..];
    let mut out = match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}{}:***{}", &base[..scheme_end], &rest[..colon], &rest[at..]),
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<&str> = query.split('&').map(|pair| if pair.starts_with("password=") { "password=***" } else { pair }).collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redacted("postgres://u@h/db?sslmode=require&password=secret"), "postgres://u@h/db?sslmode=require&password=***");
        assert_eq!(redacted("postgres://u:pw@h/db?password=secret"), "postgres://u:***@h/db?password=***");
        assert_eq!(redacted("host=h password=secret user=u"), "host=h password=*** user=u");
    }
}

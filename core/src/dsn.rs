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

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    let authority = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[authority..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}{}:***{}", &url[..authority], &rest[..colon], &rest[at..]),
        _ => url.to_string(),
    }
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
    }
}

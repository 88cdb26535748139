//! Store URLs: parsing `--store` / `INITGUARD_STORE` and picking the default.

use std::path::{Path, PathBuf};

/// Where the service-account token of a Pod is mounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PgUrl),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreUrlError {
    #[error("unknown store URL {url:?}: use file:DIR, postgres://…, kubernetes:[NAMESPACE]")]
    UnknownScheme { url: String },
    #[error("store URL {url:?} needs the {feature} backend, which this build leaves out")]
    NotBuilt { url: String, feature: &'static str },
    #[error("store URL {url:?} is invalid: {why}")]
    Invalid { url: String, why: String },
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<StoreUrl, StoreUrlError> {
        let (scheme, rest) = raw
            .split_once(':')
            .ok_or_else(|| StoreUrlError::UnknownScheme {
                url: raw.to_string(),
            })?;
        match scheme {
            "file" => {
                let dir = rest.strip_prefix("//").unwrap_or(rest);
                if dir.is_empty() {
                    return Err(StoreUrlError::Invalid {
                        url: raw.to_string(),
                        why: "file: needs a directory, e.g. file:.initguard".into(),
                    });
                }
                Ok(StoreUrl::File(PathBuf::from(dir)))
            }
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => super::postgres::PgUrl::parse(raw)
                .map(StoreUrl::Postgres)
                .map_err(|e| StoreUrlError::Invalid {
                    url: redact_for_error(raw),
                    why: e.to_string(),
                }),
            #[cfg(not(feature = "postgres"))]
            "postgres" | "postgresql" => Err(StoreUrlError::NotBuilt {
                url: redact_for_error(raw),
                feature: "postgres",
            }),
            _ => Err(StoreUrlError::UnknownScheme {
                url: raw.to_string(),
            }),
        }
    }

    /// The URL as logged: credentials removed.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::File(dir) => format!("file:{}", dir.display()),
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(pg) => pg.redacted(),
        }
    }
}

/// A URL that failed to parse, fit for an error message: everything between `://` and the last
/// `@` (user and password) is hidden, since we cannot tell which part is the password.
fn redact_for_error(raw: &str) -> String {
    match (raw.split_once("://"), raw.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => raw.to_string(),
        },
        _ => raw.to_string(),
    }
}

/// `kubernetes:` in a Pod with a service-account token (when built in), else `file:.initguard`.
pub fn default_store_url() -> &'static str {
    if cfg!(feature = "kubernetes") && Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        "kubernetes:"
    } else {
        "file:.initguard"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_urls() {
        assert_eq!(
            StoreUrl::parse("file:.initguard"),
            Ok(StoreUrl::File(".initguard".into()))
        );
        assert_eq!(
            StoreUrl::parse("file:///var/lib/x"),
            Ok(StoreUrl::File("/var/lib/x".into()))
        );
    }

    #[test]
    fn rejects_unknown_schemes() {
        assert!(matches!(
            StoreUrl::parse("redis://x"),
            Err(StoreUrlError::UnknownScheme { .. })
        ));
        assert!(matches!(
            StoreUrl::parse("nocolon"),
            Err(StoreUrlError::UnknownScheme { .. })
        ));
        assert!(StoreUrl::parse("file:").is_err());
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn parses_postgres_urls_and_hides_passwords() {
        for raw in [
            "postgres://app:pw@db:5432/app",
            "postgresql://app:pw@db:5432/app?schema=ops",
        ] {
            let url = StoreUrl::parse(raw).unwrap();
            assert!(matches!(url, StoreUrl::Postgres(_)));
            assert!(!url.redacted().contains("pw"), "{}", url.redacted());
        }
        let err = StoreUrl::parse("postgres://app:hunter2@db/app?sslmode=bogus").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

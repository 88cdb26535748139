//! Store URLs: parsing `--store` / `INITGUARD_STORE` and picking the default.

use std::path::{Path, PathBuf};

/// Where the service-account token of a Pod is mounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PgUrl),
    /// `kubernetes:` (the Pod's own namespace, or the kubeconfig context's) or `kubernetes:NS`.
    /// `context` picks a kubeconfig context (`--kube-context`); the URL itself never names one.
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        namespace: Option<String>,
        context: Option<String>,
    },
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
            "kubernetes" => parse_kubernetes(raw, rest),
            _ => Err(StoreUrlError::UnknownScheme {
                url: raw.to_string(),
            }),
        }
    }

    /// The same URL with a kubeconfig context to use (`--kube-context`); other stores ignore it.
    pub fn with_kube_context(self, context: Option<String>) -> StoreUrl {
        match self {
            #[cfg(feature = "kubernetes")]
            StoreUrl::Kubernetes { namespace, .. } => StoreUrl::Kubernetes { namespace, context },
            #[allow(unreachable_patterns)]
            other => {
                let _ = context;
                other
            }
        }
    }

    /// The URL as logged: credentials removed.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::File(dir) => format!("file:{}", dir.display()),
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(pg) => pg.redacted(),
            #[cfg(feature = "kubernetes")]
            StoreUrl::Kubernetes { namespace, .. } => {
                format!("kubernetes:{}", namespace.as_deref().unwrap_or(""))
            }
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

#[cfg(feature = "kubernetes")]
fn parse_kubernetes(raw: &str, rest: &str) -> Result<StoreUrl, StoreUrlError> {
    let ns = rest
        .strip_prefix("//")
        .unwrap_or(rest)
        .trim_end_matches('/');
    if ns.is_empty() {
        return Ok(StoreUrl::Kubernetes {
            namespace: None,
            context: None,
        });
    }
    // Namespaces are DNS-1123 labels; catching a typo here beats a 404 from the API server.
    let valid = ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !valid {
        return Err(StoreUrlError::Invalid {
            url: raw.to_string(),
            why: "the namespace must be a DNS-1123 label (a-z, 0-9, '-', at most 63 characters)"
                .into(),
        });
    }
    Ok(StoreUrl::Kubernetes {
        namespace: Some(ns.to_string()),
        context: None,
    })
}

#[cfg(not(feature = "kubernetes"))]
fn parse_kubernetes(raw: &str, _rest: &str) -> Result<StoreUrl, StoreUrlError> {
    Err(StoreUrlError::NotBuilt {
        url: raw.to_string(),
        feature: "kubernetes",
    })
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

    #[cfg(feature = "kubernetes")]
    #[test]
    fn parses_kubernetes_urls() {
        assert_eq!(
            StoreUrl::parse("kubernetes:"),
            Ok(StoreUrl::Kubernetes {
                namespace: None,
                context: None
            })
        );
        let ns = StoreUrl::parse("kubernetes:team-a").unwrap();
        assert_eq!(
            ns,
            StoreUrl::Kubernetes {
                namespace: Some("team-a".into()),
                context: None
            }
        );
        assert_eq!(ns.redacted(), "kubernetes:team-a");
        for bad in ["kubernetes:Team", "kubernetes:a_b", "kubernetes:-a"] {
            assert!(
                matches!(StoreUrl::parse(bad), Err(StoreUrlError::Invalid { .. })),
                "{bad}"
            );
        }
        let ctx = ns.with_kube_context(Some("kind-dev".into()));
        assert!(matches!(ctx, StoreUrl::Kubernetes { context: Some(c), .. } if c == "kind-dev"));
    }
}

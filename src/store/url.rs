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
    /// `zookeeper://HOST:PORT[,HOST:PORT…][/CHROOT][?prefix=/PATH/]`.
    #[cfg(feature = "zookeeper")]
    Zookeeper(super::zookeeper::ZkUrl),
    /// `etcd://HOST:PORT[,HOST:PORT…]` or `etcds://…` (TLS), `?prefix=` (issue 11).
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::EtcdUrl),
}

/// Errors never quote a URL that failed to parse: it may hold a password in a place a parser that
/// failed cannot find. They name the scheme, and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreUrlError {
    #[error(
        "unknown store URL scheme {scheme:?}: use file:DIR, postgres://…, kubernetes:[NAMESPACE], zookeeper://…, etcd://…"
    )]
    UnknownScheme { scheme: String },
    #[error(
        "the store URL has no scheme (libpq keyword strings like \"host=… dbname=…\" are not \
         accepted): use file:DIR, postgres://…, kubernetes:[NAMESPACE], zookeeper://…, etcd://…"
    )]
    NoScheme,
    #[error("store URL {url} needs the {feature} backend, which this build leaves out")]
    NotBuilt { url: String, feature: &'static str },
    #[error("store URL {url} is invalid: {why}")]
    Invalid { url: String, why: String },
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<StoreUrl, StoreUrlError> {
        let (scheme, rest) = raw.split_once(':').ok_or(StoreUrlError::NoScheme)?;
        if !is_scheme(scheme) {
            return Err(StoreUrlError::NoScheme);
        }
        match scheme {
            "file" => {
                let dir = rest.strip_prefix("//").unwrap_or(rest);
                if dir.is_empty() {
                    return Err(StoreUrlError::Invalid {
                        url: "file:".into(),
                        why: "file: needs a directory, e.g. file:.initguard".into(),
                    });
                }
                Ok(StoreUrl::File(PathBuf::from(dir)))
            }
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" if !rest.starts_with("//") => Err(StoreUrlError::Invalid {
                url: format!("{scheme}:…"),
                why: format!("expected {scheme}://[USER@]HOST[:PORT]/DATABASE[?PARAMETERS]"),
            }),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => super::postgres::PgUrl::parse(raw)
                .map(StoreUrl::Postgres)
                .map_err(|e| StoreUrlError::Invalid {
                    url: format!("{scheme}://…"),
                    why: e.to_string(),
                }),
            #[cfg(not(feature = "postgres"))]
            "postgres" | "postgresql" => Err(StoreUrlError::NotBuilt {
                url: format!("{scheme}://…"),
                feature: "postgres",
            }),
            "kubernetes" => parse_kubernetes(raw, rest),
            #[cfg(feature = "zookeeper")]
            "zookeeper" => super::zookeeper::ZkUrl::parse(raw)
                .map(StoreUrl::Zookeeper)
                .map_err(|e| StoreUrlError::Invalid {
                    url: "zookeeper://…".into(),
                    why: e.to_string(),
                }),
            #[cfg(not(feature = "zookeeper"))]
            "zookeeper" => Err(StoreUrlError::NotBuilt {
                url: "zookeeper://…".into(),
                feature: "zookeeper",
            }),
            // etcd store (issue 11).
            #[cfg(feature = "etcd")]
            "etcd" | "etcds" => super::etcd::EtcdUrl::parse(raw)
                .map(StoreUrl::Etcd)
                .map_err(|e| StoreUrlError::Invalid {
                    url: format!("{scheme}://…"),
                    why: e.to_string(),
                }),
            #[cfg(not(feature = "etcd"))]
            "etcd" | "etcds" => Err(StoreUrlError::NotBuilt {
                url: format!("{scheme}://…"),
                feature: "etcd",
            }),
            _ => Err(StoreUrlError::UnknownScheme {
                scheme: scheme.to_string(),
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
    /// Whether the store is a database that can run SQL tasks (`Store::supports_sql`), known from
    /// the URL alone so that such a task is refused before any store is contacted.
    pub fn runs_sql(&self) -> bool {
        #[cfg(feature = "postgres")]
        if let StoreUrl::Postgres(_) = self {
            return true;
        }
        false
    }

    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::File(dir) => format!("file:{}", dir.display()),
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(pg) => pg.redacted(),
            #[cfg(feature = "kubernetes")]
            StoreUrl::Kubernetes { namespace, .. } => {
                format!("kubernetes:{}", namespace.as_deref().unwrap_or(""))
            }
            #[cfg(feature = "zookeeper")]
            StoreUrl::Zookeeper(zk) => zk.redacted(),
            #[cfg(feature = "etcd")]
            StoreUrl::Etcd(url) => url.redacted(),
        }
    }
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` and `.`. Bounded, so that a password
/// before the first `:` (`app:PW@…` without a scheme) is never taken for one and echoed.
fn is_scheme(s: &str) -> bool {
    s.len() <= 16
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !s.contains(char::is_uppercase)
}

/// Everything in `raw` that may be a password, however malformed `raw` is: the user-info after
/// its first `:` (with or without `//`, up to the last `@`), and the value of every `password=`
/// (URL parameter or libpq keyword, quoted or not), each also percent-decoded. The CLI removes
/// them from every line it prints, behind the parsers that never quote them.
pub fn secret_parts(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = raw.split_once(':') {
        let rest = rest.trim_start_matches('/');
        if let Some((userinfo, _)) = rest.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            out.push(password.to_string());
        }
    }
    let mut from = 0;
    while let Some(at) = raw[from..].find("password=") {
        let start = from + at + "password=".len();
        let value = &raw[start..];
        let value = match value.strip_prefix('\'') {
            Some(quoted) => quoted.split('\'').next().unwrap_or(quoted),
            None => value
                .split(|c: char| c == '&' || c.is_whitespace())
                .next()
                .unwrap_or(value),
        };
        out.push(value.to_string());
        from = start;
    }
    let decoded: Vec<String> = out.iter().filter_map(|p| percent_decoded(p)).collect();
    out.extend(decoded);
    out.retain(|p| !p.is_empty());
    out.sort();
    out.dedup();
    out
}

/// `s` with `%XX` escapes decoded, when that changes it and gives UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|d| d != s)
}

/// `line` with every part of `secrets` replaced by `***`, longest first (so that a password that
/// contains another is hidden whole).
pub fn scrub(line: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = line.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(feature = "kubernetes")]
fn parse_kubernetes(_raw: &str, rest: &str) -> Result<StoreUrl, StoreUrlError> {
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
        // Not echoed: `kubernetes://user:password@host` is a plausible mistake.
        return Err(StoreUrlError::Invalid {
            url: "kubernetes:…".into(),
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
fn parse_kubernetes(_raw: &str, _rest: &str) -> Result<StoreUrl, StoreUrlError> {
    Err(StoreUrlError::NotBuilt {
        url: "kubernetes:".into(),
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
            Err(StoreUrlError::NoScheme)
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

    #[test]
    fn secret_parts_finds_the_password_wherever_it_is() {
        for (raw, pw) in [
            ("postgres://app:PW1@db/app", "PW1"),
            ("postgresql:/app:PW2@db/app", "PW2"),
            ("postgress://app:PW3@db/app", "PW3"),
            ("postgres://app:p@ss@db/app", "p@ss"),
            ("postgres://app@db/app?sslmode=bogus&password=PW4", "PW4"),
            ("host=db password=PW5 dbname=app", "PW5"),
            ("host=db password='P W6' dbname=app", "P W6"),
            ("postgres://app:P%40W7@db/app", "P@W7"),
        ] {
            let parts = secret_parts(raw);
            assert!(parts.iter().any(|p| p == pw), "{raw}: {parts:?}");
            assert!(!scrub(&format!("x {raw} y"), &parts).contains(pw), "{raw}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_url() {
        for raw in [
            "postgress://app:SECRET@db/app",
            "host=db password=SECRET dbname=app",
            "app:SECRET@db/app",
            "postgresql:/app:SECRET@db/app",
            "postgres://app:SECRET@db/app?sslmode=bogus",
            "postgres://app@db/app?password=SECRET&sslmode=bogus",
            "postgres://app:SECRET@db:notaport/app",
            "postgres://app:SECRET@db/app?schema=Bad",
            "postgres://app:SECRET@db/app?SECRET",
            "postgres://app:SECRET@db/app?SECRET=1",
            "postgres://app:SECRET@db/app?sslmode=SECRET",
            "postgres://app:SECRET@db/app?sslrootcert=%ff",
            "postgres://app:SECRET@db/app?connect_timeout=SECRET",
            "kubernetes:SECRET_NS",
        ] {
            if let Err(e) = StoreUrl::parse(raw) {
                assert!(!e.to_string().contains("SECRET"), "{raw}: {e}");
            }
        }
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

//! `postgres://…` store URLs: the initguard-only parameters (`schema`, `sslmode`, `sslrootcert`)
//! taken out, the rest checked with tokio-postgres' own parser. Pure parsing; must never print or
//! log the password (`redacted` is the only form that leaves this module in messages).

use percent_encoding::percent_decode_str;
use std::path::PathBuf;
use std::str::FromStr;

/// Schema that holds initguard's tables when the URL names none.
pub const DEFAULT_SCHEMA: &str = "initguard";

/// libpq's `sslmode` values that initguard implements (`allow` is treated like `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert` is given (as libpq does).
    Require,
    /// TLS with a certificate signed by a trusted CA, whatever host name it names.
    VerifyCa,
    /// TLS with a trusted certificate for the host connected to.
    VerifyFull,
}

/// A parsed `postgres://` / `postgresql://` store URL. `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL without initguard's own parameters, as tokio-postgres parses it. Holds the
    /// password when the URL has one: never log it, use `redacted`.
    pub(crate) conninfo: String,
    /// Schema holding initguard's tables (`?schema=`, default `initguard`).
    pub schema: String,
    pub ssl: SslMode,
    /// CA bundle (`?sslrootcert=`); webpki's roots when absent.
    pub root_cert: Option<PathBuf>,
    /// File whose first line is the password (`--store-password-file`), read at connect time.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgUrl").field(&self.redacted()).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PgUrlError(pub String);

impl PgUrl {
    pub fn parse(raw: &str) -> Result<PgUrl, PgUrlError> {
        let (base, query) = match raw.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (raw, None),
        };
        let mut kept = Vec::new();
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut ssl = None;
        let mut root_cert = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || {
                percent_decode_str(v)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| PgUrlError(format!("parameter {k} is not valid UTF-8")))
            };
            match k {
                "schema" => schema = value()?,
                "sslmode" => {
                    ssl = Some(match value()?.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        // The value is not quoted: in a malformed URL it may be the password.
                        _ => {
                            return Err(PgUrlError(
                                "sslmode is not one of disable, prefer, require, verify-ca, verify-full"
                                    .into(),
                            ));
                        }
                    })
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value()?)),
                _ => kept.push(pair),
            }
        }
        check_schema_name(&schema)?;
        let conninfo = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // tokio-postgres' parser is the authority on the rest. Its messages quote option names,
        // which in a malformed URL may be the password: only known names are kept.
        let config = tokio_postgres::Config::from_str(&conninfo)
            .map_err(|e| PgUrlError(unquote_unknown(&error_chain(&e))))?;
        let ssl = ssl.unwrap_or_else(|| {
            if all_local(&config) {
                SslMode::Disable
            } else {
                SslMode::Prefer
            }
        });
        Ok(PgUrl {
            conninfo,
            schema,
            ssl,
            root_cert,
            password_file: None,
        })
    }

    /// The URL with the password (user-info or `password=` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut out = redact(&self.conninfo);
        let mut extra = Vec::new();
        if self.schema != DEFAULT_SCHEMA {
            extra.push(format!("schema={}", self.schema));
        }
        match self.ssl {
            SslMode::Disable | SslMode::Prefer => {}
            SslMode::Require => extra.push("sslmode=require".into()),
            SslMode::VerifyCa => extra.push("sslmode=verify-ca".into()),
            SslMode::VerifyFull => extra.push("sslmode=verify-full".into()),
        }
        if !extra.is_empty() {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&extra.join("&"));
        }
        out
    }

    /// The same database with another schema (for `--pg-schema`).
    pub fn with_schema(mut self, schema: &str) -> Result<PgUrl, PgUrlError> {
        check_schema_name(schema)?;
        self.schema = schema.to_string();
        Ok(self)
    }
}

/// Schema names are spliced into SQL as quoted identifiers; a plain identifier keeps that simple.
fn check_schema_name(s: &str) -> Result<(), PgUrlError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PgUrlError(format!(
            "schema {s:?} must be 1-63 characters of a-z, 0-9 and _, starting with a letter or _"
        )))
    }
}

/// libpq's connection parameters: the option names a parse error may show as they are.
const KNOWN_OPTIONS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslmode",
    "sslnegotiation",
];

/// `msg` with every `` `quoted` `` part that is not a known option name replaced by `…`.
fn unquote_unknown(msg: &str) -> String {
    let mut out = String::new();
    let mut parts = msg.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut quoted = true;
    for part in parts {
        if quoted {
            out.push('`');
            out.push_str(if KNOWN_OPTIONS.contains(&part) {
                part
            } else {
                "…"
            });
            out.push('`');
        } else {
            out.push_str(part);
        }
        quoted = !quoted;
    }
    out
}

fn all_local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
}

/// Replace the password in `scheme://user:password@host…` and in a `password=` parameter.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let auth_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(auth_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{userinfo}@{hosts}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// An error and its causes on one line ("error connecting to server: Connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initguard_parameters_and_keeps_the_rest() {
        let u = PgUrl::parse(
            "postgres://app:s3cret@db.example:5433/app?schema=ops&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(u.schema, "ops");
        assert_eq!(u.ssl, SslMode::VerifyFull);
        assert_eq!(u.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            u.conninfo,
            "postgres://app:s3cret@db.example:5433/app?application_name=x"
        );
    }

    #[test]
    fn loopback_defaults_to_plain_and_remote_to_prefer() {
        assert_eq!(
            PgUrl::parse("postgresql://u@127.0.0.1:5432/d").unwrap().ssl,
            SslMode::Disable
        );
        assert_eq!(
            PgUrl::parse("postgres://u@localhost/d").unwrap().ssl,
            SslMode::Disable
        );
        assert_eq!(
            PgUrl::parse("postgres://u@db.internal/d").unwrap().ssl,
            SslMode::Prefer
        );
    }

    #[test]
    fn redacted_hides_the_password_everywhere() {
        let u = PgUrl::parse("postgres://app:s3cret@db:5432/app?password=other&sslmode=require")
            .unwrap();
        let r = u.redacted();
        assert!(!r.contains("s3cret") && !r.contains("other"), "{r}");
        assert_eq!(
            r,
            "postgres://app:***@db:5432/app?password=***&sslmode=require"
        );
        let u = PgUrl::parse("postgres://app@db/app").unwrap();
        assert_eq!(u.redacted(), "postgres://app@db/app");
        let u = PgUrl::parse("postgres://app:s3cret@db/app").unwrap();
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    /// Every way `parse` fails, with the password (PW) in each place it can be: the error never
    /// repeats it, nor an unknown option name (which may be the password misplaced).
    #[test]
    fn parse_errors_never_repeat_the_password() {
        for raw in [
            "postgres://app:PW@db/app?sslmode=bogus",
            "postgres://app@db/app?password=PW&sslmode=bogus",
            "postgres://app@db/app?sslmode=PW",
            "postgres://app:PW@db/app?schema=Bad-Name",
            "postgres://app:PW@db/app?schema=%ff",
            "postgres://app:PW@db/app?sslrootcert=%ff",
            "postgres://app:PW@db:notaport/app",
            "postgres://app:PW@db/app?PW",
            "postgres://app:PW@db/app?PW=1",
            "postgres://app:PW@db/app?connect_timeout=PW",
            "postgres://app:PW@db/app?target_session_attrs=PW",
            "postgres://app:PW@[::1/app",
            "postgres://app:PW@db/app?password",
        ] {
            let err = PgUrl::parse(raw).expect_err(raw).to_string();
            assert!(!err.contains("PW"), "{raw}: {err}");
        }
    }

    #[test]
    fn unknown_option_names_are_not_quoted_but_known_ones_are() {
        assert_eq!(
            unquote_unknown("unknown option `hunter2`, invalid value for option `port`"),
            "unknown option `…`, invalid value for option `port`"
        );
    }

    #[test]
    fn bad_schema_and_sslmode_are_refused() {
        assert!(PgUrl::parse("postgres://u@h/d?schema=Bad-Name").is_err());
        assert!(PgUrl::parse("postgres://u@h/d?schema=x%3Bdrop").is_err());
        assert!(PgUrl::parse("postgres://u@h/d?sslmode=sometimes").is_err());
        assert!(PgUrl::parse("postgres://u@h/d?nonsense=1").is_err());
    }
}

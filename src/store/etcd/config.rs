//! `etcd://` / `etcds://` store URLs and where the store's credentials come from. Pure parsing
//! (plus reading the `INITGUARD_ETCD_*` variables, never their files); must never print a
//! password: the URL may not carry one, and the password file is only read at connect time.

use percent_encoding::percent_decode_str;
use std::path::PathBuf;

/// Where the keys live when the URL names no `?prefix=`.
pub const DEFAULT_PREFIX: &str = "/initguard/";
/// etcd's client port, when an endpoint names none.
const DEFAULT_PORT: u16 = 2379;

/// Variables the etcd store reads (never flags: the command line is visible to every process).
pub const USER_ENV: &str = "INITGUARD_ETCD_USER";
pub const CA_ENV: &str = "INITGUARD_ETCD_CA_FILE";
pub const CERT_ENV: &str = "INITGUARD_ETCD_CERT_FILE";
pub const KEY_ENV: &str = "INITGUARD_ETCD_KEY_FILE";

/// A parsed etcd store URL plus its credentials' sources. `Debug` shows no secret: there is none
/// in it (the password stays in its file until connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port`, as given (IPv6 in brackets).
    pub endpoints: Vec<String>,
    /// `etcds://`: TLS to every endpoint.
    pub tls: bool,
    /// Key prefix, always ending in `/` (`?prefix=`, default `/initguard/`).
    pub prefix: String,
    /// User for etcd's authentication (`user@` in the URL or `INITGUARD_ETCD_USER`).
    pub user: Option<String>,
    /// File whose first line is the user's password (`--store-password-file`).
    pub password_file: Option<PathBuf>,
    /// CA bundle that signs the servers' certificates (`INITGUARD_ETCD_CA_FILE`); the webpki
    /// roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`INITGUARD_ETCD_CERT_FILE`, `_KEY_FILE`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EtcdUrlError(pub String);

fn err(why: impl Into<String>) -> EtcdUrlError {
    EtcdUrlError(why.into())
}

impl EtcdUrl {
    /// Parse `etcd://[USER@]HOST[:PORT][,HOST[:PORT]…][/][?prefix=/P/]` (or `etcds://`). Errors
    /// never quote the URL: a password put where it does not belong would be repeated.
    pub fn parse(raw: &str) -> Result<EtcdUrl, EtcdUrlError> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| err("expected etcd://HOST:PORT[,HOST:PORT…][?prefix=/PATH/]"))?;
        let tls = match scheme {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(err("the scheme is etcd:// or etcds://")),
        };
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let authority = base.strip_suffix('/').unwrap_or(base);
        if authority.contains('/') {
            return Err(err(
                "an etcd URL has no path: name the key prefix with ?prefix=/PATH/",
            ));
        }
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, _)) if userinfo.contains(':') => {
                return Err(err(format!(
                    "a password in the URL is refused (it would show in process lists); put it \
                     in a file named by --store-password-file, and the user in {USER_ENV} or \
                     as USER@ in the URL"
                )));
            }
            Some((user, hosts)) => {
                let user = decode(user, "the user")?;
                if user.is_empty() {
                    return Err(err("the user before @ is empty"));
                }
                (Some(user), hosts)
            }
            None => (None, authority),
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            endpoints.push(endpoint(host)?);
        }
        let mut prefix = DEFAULT_PREFIX.to_string();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            match pair.split_once('=') {
                Some(("prefix", v)) => prefix = decode(v, "prefix")?,
                // Not quoted: in a malformed URL the name may be the password.
                _ => return Err(err("the only URL parameter is prefix=/PATH/")),
            }
        }
        check_prefix(&prefix)?;
        if !prefix.ends_with('/') {
            // `/a` and `/ab` would share keys: every prefix is a directory of its own.
            prefix.push('/');
        }
        Ok(EtcdUrl {
            endpoints,
            tls,
            prefix,
            user,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        })
    }

    /// The credentials' sources from the `INITGUARD_ETCD_*` variables (a user in the URL wins
    /// over `INITGUARD_ETCD_USER`), and `password_file` (`--store-password-file`).
    pub fn with_credentials_from_env(mut self, password_file: Option<PathBuf>) -> EtcdUrl {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if self.user.is_none() {
            self.user = var(USER_ENV);
        }
        self.password_file = password_file;
        self.ca_file = var(CA_ENV).map(PathBuf::from);
        self.cert_file = var(CERT_ENV).map(PathBuf::from);
        self.key_file = var(KEY_ENV).map(PathBuf::from);
        self
    }

    /// As logged: no credentials to hide, only the user is shown.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        // A user with a `:` is a password put in the wrong place (`open` refuses it): hidden.
        let user = match self.user.as_deref() {
            Some(u) if u.contains(':') => "***@".to_string(),
            Some(u) => format!("{u}@"),
            None => String::new(),
        };
        let mut out = format!("{scheme}://{user}{}", self.endpoints.join(","));
        if self.prefix != DEFAULT_PREFIX {
            out.push_str(&format!("?prefix={}", self.prefix));
        }
        out
    }
}

fn decode(v: &str, what: &str) -> Result<String, EtcdUrlError> {
    percent_decode_str(v)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| err(format!("{what} is not valid UTF-8")))
}

/// `HOST[:PORT]` checked, with the default port added.
fn endpoint(host: &str) -> Result<String, EtcdUrlError> {
    if host.is_empty() {
        return Err(err("an endpoint is empty: expected HOST:PORT[,HOST:PORT…]"));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| err("an IPv6 endpoint lacks its closing ]"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| err("expected :PORT after an IPv6 address"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n.to_string(), Some(p)),
            None => (host.to_string(), None),
        }
    };
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if !ok_name {
        return Err(err("a host name has characters no host name has"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("a port is not a number from 1 to 65535"))?,
    };
    Ok(format!("{name}:{port}"))
}

/// A prefix is an absolute, printable key path: it is shown in `etcdctl get --prefix` hints.
fn check_prefix(p: &str) -> Result<(), EtcdUrlError> {
    let ok = p.starts_with('/')
        && p.len() <= 256
        && p.chars().all(|c| c.is_ascii_graphic())
        && !p.contains("//");
    if ok {
        Ok(())
    } else {
        Err(err(
            "prefix must start with /, be at most 256 printable ASCII characters, and not contain //",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_prefix_and_user() {
        let u = EtcdUrl::parse("etcd://10.0.0.1:2379,etcd-1.db:2380,[::1]:23,host").unwrap();
        assert_eq!(
            u.endpoints,
            ["10.0.0.1:2379", "etcd-1.db:2380", "[::1]:23", "host:2379"]
        );
        assert!(!u.tls);
        assert_eq!(u.prefix, DEFAULT_PREFIX);
        let u = EtcdUrl::parse("etcds://ops@h:1/?prefix=%2Fteam-a%2Fig").unwrap();
        assert!(u.tls);
        assert_eq!(u.user.as_deref(), Some("ops"));
        assert_eq!(u.prefix, "/team-a/ig/");
        assert_eq!(u.redacted(), "etcds://ops@h:1?prefix=/team-a/ig/");
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for raw in [
            "etcd://root:SECRET@h:2379",
            "etcd://root:SECRET@h:2379?prefix=/x/",
            "etcd://h:SECRET",
            "etcd://h:2379/SECRET",
            "etcd://h:2379?SECRET",
            "etcd://h:2379?SECRET=1",
            "etcd://h:2379?prefix=SECRET",
            "etcd://h:2379,",
            "etcd:SECRET",
            "etcdx://h",
            "etcd://h:0",
            "etcd://h:2379?prefix=%ff",
        ] {
            let e = EtcdUrl::parse(raw).expect_err(raw).to_string();
            assert!(!e.contains("SECRET"), "{raw}: {e}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_with_where_it_belongs() {
        let e = EtcdUrl::parse("etcd://root:pw@h").unwrap_err().to_string();
        assert!(e.contains("--store-password-file"), "{e}");
    }
}

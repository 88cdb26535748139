//! `zookeeper://HOST:PORT[,HOST:PORT…][/CHROOT][?prefix=/P/]` and the digest credentials, from
//! `INITGUARD_ZK_AUTH_FILE` (first line `user:password`) or `INITGUARD_ZK_AUTH`, never from the URL
//! or the command line. Pure parsing plus the one read of those variables; must never put a
//! password into a URL, an error or a log line.

use std::path::{Path, PathBuf};

/// Where initguard's nodes live under the chroot unless `?prefix=` says otherwise.
pub const DEFAULT_PREFIX: &str = "/initguard/";
/// ZooKeeper's client port when a host names none.
const DEFAULT_PORT: u16 = 2181;
/// The digest credentials, `user:password`, as a variable or as the first line of a file.
pub const AUTH_ENV: &str = "INITGUARD_ZK_AUTH";
pub const AUTH_FILE_ENV: &str = "INITGUARD_ZK_AUTH_FILE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port`, every host with its port.
    pub hosts: String,
    /// `/chroot` or empty.
    pub chroot: String,
    /// Absolute, ending in `/`.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZkUrlError {
    #[error("expected zookeeper://HOST:PORT[,HOST:PORT…][/CHROOT][?prefix=/PATH/]")]
    Shape,
    #[error(
        "credentials do not go into the URL: put user:password into the file named by \
         {AUTH_FILE_ENV} (or into {AUTH_ENV})"
    )]
    Credentials,
    /// Not echoed: a password put where the port goes (`zk:PW@…` without the `@`) would be.
    #[error("host number {n} has no valid port (HOST or HOST:PORT, port 1-65535)")]
    Port { n: usize },
    #[error("the {what} is not a ZooKeeper path (/a/b: no empty, \".\" or \"..\" parts)")]
    Path { what: &'static str, path: String },
    /// Not echoed: a misplaced password could be the parameter's name as well as its value.
    #[error("unknown URL parameter: only prefix=/PATH/ is known")]
    Parameter,
}

impl ZkUrl {
    pub fn parse(raw: &str) -> Result<ZkUrl, ZkUrlError> {
        let rest = raw.strip_prefix("zookeeper://").ok_or(ZkUrlError::Shape)?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, chroot) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(ZkUrlError::Credentials);
        }
        if authority.is_empty() {
            return Err(ZkUrlError::Shape);
        }
        let mut hosts = Vec::new();
        for (i, host) in authority.split(',').enumerate() {
            hosts.push(host_port(host).ok_or(ZkUrlError::Port { n: i + 1 })?);
        }
        let chroot = chroot.trim_end_matches('/');
        if !chroot.is_empty() && !valid_path(chroot) {
            return Err(ZkUrlError::Path {
                what: "chroot",
                path: chroot.to_string(),
            });
        }
        let mut prefix = DEFAULT_PREFIX.to_string();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name != "prefix" {
                return Err(ZkUrlError::Parameter);
            }
            let trimmed = value.trim_end_matches('/');
            if !trimmed.starts_with('/') || !valid_path(trimmed) {
                return Err(ZkUrlError::Path {
                    what: "prefix",
                    path: value.to_string(),
                });
            }
            prefix = format!("{trimmed}/");
        }
        Ok(ZkUrl {
            hosts: hosts.join(","),
            chroot: chroot.to_string(),
            prefix,
        })
    }

    /// The URL as logged (it never holds credentials).
    pub fn redacted(&self) -> String {
        let mut s = format!("zookeeper://{}{}", self.hosts, self.chroot);
        if self.prefix != DEFAULT_PREFIX {
            s.push_str(&format!("?prefix={}", self.prefix));
        }
        s
    }

    /// The node every task node is a child of: chroot and prefix, without the trailing `/`.
    /// The chroot is applied here rather than by the client, so that initguard can create it.
    pub fn base(&self) -> String {
        format!("{}{}", self.chroot, self.prefix.trim_end_matches('/'))
    }
}

fn host_port(raw: &str) -> Option<String> {
    // `[::1]:2181` as well as `host:2181`.
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, Some(p)),
        _ => (raw, None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some(format!("{host}:{port}"))
}

/// An absolute path whose every part is a usable node name.
fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && p[1..].split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && !part.chars().any(|c| c.is_control())
        })
}

/// Digest credentials (`user:password`) for `addauth digest`.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth {
    pub user: String,
    password: String,
}

impl std::fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZkAuthError {
    #[error("cannot read {AUTH_FILE_ENV} {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from} must hold user:password (digest scheme), with a non-empty user")]
    Shape { from: String },
}

impl ZkAuth {
    /// The credentials the environment names: `INITGUARD_ZK_AUTH_FILE` first, then
    /// `INITGUARD_ZK_AUTH`; `None` when neither is set (nodes are then created open to anyone).
    pub fn from_env() -> Result<Option<ZkAuth>, ZkAuthError> {
        let var = |n| std::env::var(n).ok().filter(|v: &String| !v.is_empty());
        if let Some(file) = var(AUTH_FILE_ENV) {
            return ZkAuth::from_file(Path::new(&file)).map(Some);
        }
        match var(AUTH_ENV) {
            Some(v) => ZkAuth::parse(&v, AUTH_ENV).map(Some),
            None => Ok(None),
        }
    }

    pub fn from_file(path: &Path) -> Result<ZkAuth, ZkAuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| ZkAuthError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default();
        ZkAuth::parse(line, &format!("{AUTH_FILE_ENV} {}", path.display()))
    }

    fn parse(raw: &str, from: &str) -> Result<ZkAuth, ZkAuthError> {
        let raw = raw.trim_end_matches(['\r', '\n']);
        match raw.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(ZkAuth {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(ZkAuthError::Shape {
                from: from.to_string(),
            }),
        }
    }

    /// What `addauth digest` sends.
    pub fn digest(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }

    /// The password, for the CLI to scrub from every line it prints.
    pub fn password(&self) -> &str {
        &self.password
    }
}

/// The password the environment's credentials hold, if any (for the CLI's scrubbing; errors
/// reading them are reported by the store, not here).
pub fn env_secrets() -> Vec<String> {
    ZkAuth::from_env()
        .ok()
        .flatten()
        .map(|a| vec![a.password().to_string()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_chroot_and_prefix() {
        let u = ZkUrl::parse("zookeeper://zk1:2181,zk2/apps/team").unwrap();
        assert_eq!(u.hosts, "zk1:2181,zk2:2181");
        assert_eq!(u.chroot, "/apps/team");
        assert_eq!(u.prefix, DEFAULT_PREFIX);
        assert_eq!(u.base(), "/apps/team/initguard");
        let u = ZkUrl::parse("zookeeper://127.0.0.1:1?prefix=/x/y").unwrap();
        assert_eq!(u.prefix, "/x/y/");
        assert_eq!(u.base(), "/x/y");
        assert_eq!(u.redacted(), "zookeeper://127.0.0.1:1?prefix=/x/y/");
        assert_eq!(
            ZkUrl::parse("zookeeper://[::1]:2181/").unwrap().hosts,
            "[::1]:2181"
        );
    }

    #[test]
    fn rejects_what_it_cannot_use_without_echoing_secrets() {
        for (raw, want) in [
            ("zookeeper://", ZkUrlError::Shape),
            ("zookeeper:zk:2181", ZkUrlError::Shape),
            ("zookeeper://u:SECRET@zk:2181", ZkUrlError::Credentials),
            ("zookeeper://zk:1,zk:SECRET", ZkUrlError::Port { n: 2 }),
            (
                "zookeeper://zk/a//b",
                ZkUrlError::Path {
                    what: "chroot",
                    path: "/a//b".into(),
                },
            ),
            ("zookeeper://zk?password=SECRET", ZkUrlError::Parameter),
            ("zookeeper://zk?SECRET=1", ZkUrlError::Parameter),
        ] {
            let got = ZkUrl::parse(raw).unwrap_err();
            assert_eq!(got, want, "{raw}");
            assert!(!got.to_string().contains("SECRET"), "{got}");
        }
    }

    #[test]
    fn credentials_need_a_user_and_never_print_the_password() {
        let a = ZkAuth::parse("app:pw:with:colons\n", "x").unwrap();
        assert_eq!(a.user, "app");
        assert_eq!(a.password(), "pw:with:colons");
        assert!(!format!("{a:?}").contains("pw"));
        assert!(ZkAuth::parse(":pw", "x").is_err());
        assert!(ZkAuth::parse("nocolon", "x").is_err());
    }
}

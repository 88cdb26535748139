//! Connecting to PostgreSQL: password sources, rustls TLS per `sslmode`, bounded retries, and the
//! task that drives each connection and passes LISTEN notifications on. Must never put the
//! password in an error or a log line, and never retry forever.

use super::config::{PgUrl, SslMode, error_chain};
use crate::store::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTls;
use tokio_postgres::{AsyncMessage, Client, Connection};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Attempts per connect, and the pauses between them: a store that is down is reported (exit
/// 69) rather than waited for.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_BACKOFF: [Duration; 2] = [Duration::from_millis(400), Duration::from_millis(1200)];
/// Per attempt, for everything a connection needs before it is usable: TCP connect, TLS, the
/// startup and authentication exchange. tokio-postgres' `connect_timeout` covers the TCP
/// connect only; a server that accepts the connection and then says nothing (a stopped
/// postmaster, a black-holed proxy) would otherwise hang the startup forever.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// All attempts of one connect together: the bound README states for a store that does not
/// answer.
pub(crate) const CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// A live connection: the client and the LISTEN notifications it receives.
pub(crate) struct Conn {
    pub client: Client,
    /// Payloads of NOTIFYs on initguard's channel; closed when the connection ends.
    pub notes: broadcast::Sender<String>,
    /// Set when a statement on it went unanswered: never handed out again, even before the
    /// shared slot can be cleared (another caller may hold it while reconnecting).
    pub hung: std::sync::atomic::AtomicBool,
}

impl Conn {
    /// LISTEN on `channel`. Callers join it with their first statement: tokio-postgres sends both
    /// before waiting, and the server runs them in order, so the LISTEN is in effect before that
    /// statement looks at anything, for no round trip of its own.
    pub async fn listen(&self, channel: &str) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await
    }

    /// Still worth sending statements to.
    pub fn usable(&self) -> bool {
        !self.client.is_closed() && !self.hung.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// Everything needed to (re)connect to one database, prepared once.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: Tls,
    /// The URL as logged (password removed).
    pub label: String,
}

impl Connector {
    pub fn new(url: &PgUrl) -> Result<Connector, StoreError> {
        let label = url.redacted();
        let config_err = |reason: String| StoreError::Config {
            store: label.clone(),
            reason,
        };
        let mut config: tokio_postgres::Config = url
            .conninfo
            .parse()
            .map_err(|e: tokio_postgres::Error| config_err(error_chain(&e)))?;
        if config.get_hosts().is_empty() {
            config.host(env_nonempty("PGHOST").as_deref().unwrap_or("localhost"));
        }
        if config.get_ports().is_empty()
            && let Some(port) = env_nonempty("PGPORT").and_then(|p| p.parse::<u16>().ok())
        {
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env_nonempty("PGUSER")
                .or_else(os_user)
                .ok_or_else(|| config_err("no user in the URL and none in PGUSER".into()))?;
            config.user(user);
        }
        if config.get_dbname().is_none()
            && let Some(db) = env_nonempty("PGDATABASE")
        {
            config.dbname(db);
        }
        if config.get_password().is_none()
            && let Some(pw) = password(url, &config).map_err(config_err)?
        {
            config.password(pw);
        }
        if config.get_application_name().is_none() {
            config.application_name("initguard");
        }
        config.connect_timeout(ATTEMPT_TIMEOUT);
        // Notice a dead server or a cut network on an idle connection within seconds, not hours.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(10));
        let tls = match url.ssl {
            SslMode::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Tls::Plain
            }
            mode => {
                config.ssl_mode(if mode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                Tls::Rustls(MakeRustlsConnect::new(
                    tls_config(mode, url.root_cert.as_deref()).map_err(config_err)?,
                ))
            }
        };
        Ok(Connector { config, tls, label })
    }

    /// Add a server setting for every session (`-c name=value` in the startup options).
    pub fn set_option(&mut self, name: &str, value: &str) {
        let cur = self.config.get_options().unwrap_or_default().to_string();
        let opts = format!("{cur} -c {name}={value}");
        self.config.options(opts.trim());
    }

    /// Cancel whatever `conn` is running, in the background (used when a task's future is
    /// dropped: its transaction must not go on holding locks, nor commit later), then wait for
    /// the connection to answer all it was sent before, so that the cancelled statement and
    /// anything queued behind it have ended when the task does. `cancel::settle` waits for it
    /// before the process exits.
    pub fn cancel_in_background(&self, conn: &Arc<Conn>) {
        let tls = self.tls.clone();
        let conn = conn.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let ended = async move {
                let token = conn.client.cancel_token();
                let _ = match tls {
                    Tls::Plain => token.cancel_query(NoTls).await,
                    Tls::Rustls(t) => token.cancel_query(t).await,
                };
                let _ = conn.client.batch_execute("").await;
            };
            super::cancel::track(rt.spawn(async move {
                let _ = tokio::time::timeout(super::cancel::TASK_LIMIT, ended).await;
            }));
        }
    }

    /// Connect, retrying transient failures a few times within `CONNECT_BUDGET`; configuration
    /// problems fail at once.
    pub async fn connect(&self) -> Result<Arc<Conn>, StoreError> {
        self.connect_until(Instant::now() + CONNECT_BUDGET).await
    }

    /// Connect as `connect` does, giving up at `deadline` whatever the server does meanwhile.
    pub async fn connect_until(&self, deadline: Instant) -> Result<Arc<Conn>, StoreError> {
        let started = Instant::now();
        let mut last = String::from("no time left to connect");
        let mut unanswered = false;
        let mut attempts = 0;
        for attempt in 0..CONNECT_ATTEMPTS {
            if attempt > 0 {
                let pause = CONNECT_BACKOFF[(attempt as usize - 1).min(CONNECT_BACKOFF.len() - 1)];
                if Instant::now() + pause >= deadline {
                    break;
                }
                tracing::debug!(store = %self.label, "connect attempt {attempt} failed ({last}); retrying in {}ms", pause.as_millis());
                tokio::time::sleep(pause).await;
            }
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            if budget.is_zero() {
                break;
            }
            attempts += 1;
            unanswered = false;
            match tokio::time::timeout(budget, self.connect_once()).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => match classify(&self.label, &e) {
                    Err(fatal) => return Err(fatal),
                    Ok(transient) => last = transient,
                },
                Err(_) => unanswered = true,
            }
        }
        let tries = if attempts == 1 { "attempt" } else { "attempts" };
        let took = started.elapsed().as_secs_f64();
        Err(StoreError::Unreachable {
            store: self.label.clone(),
            reason: if unanswered {
                format!(
                    "connecting: the server did not answer within {took:.1}s (after {attempts} {tries})"
                )
            } else {
                format!("{last} (after {attempts} {tries} in {took:.1}s)")
            },
        })
    }

    async fn connect_once(&self) -> Result<Arc<Conn>, tokio_postgres::Error> {
        let (client, notes) = match &self.tls {
            Tls::Plain => {
                let (client, conn) = self.config.connect(NoTls).await?;
                (client, drive(conn))
            }
            Tls::Rustls(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                (client, drive(conn))
            }
        };
        Ok(Arc::new(Conn {
            client,
            notes,
            hung: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// Run the connection in a task of its own, forwarding notifications. The sender is dropped when
/// the connection ends, which wakes every waiter so that it reconnects.
fn drive<S, T>(mut conn: Connection<S, T>) -> broadcast::Sender<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, _) = broadcast::channel(256);
    let sender = tx.clone();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = sender.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("postgres connection ended: {}", error_chain(&e));
                    break;
                }
                None => break,
            }
        }
        // Dropping the last sender closes every subscriber's receiver.
        drop(sender);
    });
    tx
}

/// `Ok(reason)` for failures worth retrying (server down, network), `Err` for the ones that
/// retrying cannot fix (bad password, unknown database, TLS misconfiguration). A server's answer
/// is judged by its SQLSTATE; a failure on the client's side by its kind (see `ClientKind`).
pub(crate) fn classify(store: &str, e: &tokio_postgres::Error) -> Result<String, StoreError> {
    let reason = error_chain(e);
    let config = |reason| StoreError::Config {
        store: store.to_string(),
        reason,
    };
    if let Some(code) = e.code() {
        return if *code == SqlState::TOO_MANY_CONNECTIONS {
            Err(StoreError::Overloaded {
                store: store.to_string(),
                reason,
            })
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            Err(config(format!(
                "{reason}; check the user and the password (PGPASSWORD, PGPASSFILE or --store-password-file)"
            )))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Err(config(reason))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            Err(StoreError::Forbidden {
                store: store.to_string(),
                reason,
            })
        } else {
            // Starting up, shutting down, admin shutdown: all pass.
            Ok(reason)
        };
    }
    match ClientKind::of(e) {
        // A missing password, an unsupported authentication method, a bad connection string.
        ClientKind::Config | ClientKind::ConfigParse | ClientKind::Authentication => {
            Err(config(reason))
        }
        ClientKind::Tls if tls_cut_short(e) => Ok(reason),
        // A certificate that does not verify, a server without TLS under sslmode=require.
        ClientKind::Tls => Err(config(reason)),
        ClientKind::Other => Ok(reason),
    }
}

/// The kinds of tokio-postgres' own (client-side) failures that `classify` tells apart.
/// tokio-postgres keeps its `Kind` private, and its errors offer no accessor for it, but an
/// error's `Display` is exactly the kind's fixed description, the cause being only in `source()`
/// (tokio-postgres 0.7: "invalid configuration", not "invalid configuration: host missing").
/// So the whole text is compared, never a prefix or a cause: no server message, host name or
/// path can match. Errors from the server carry a SQLSTATE and never get here. The unit tests
/// produce a real error of each kind, so an upgrade that rewords one fails them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Config,
    ConfigParse,
    Authentication,
    Tls,
    Other,
}

impl ClientKind {
    fn of(e: &tokio_postgres::Error) -> ClientKind {
        match e.to_string().as_str() {
            "invalid configuration" => ClientKind::Config,
            "invalid connection string" => ClientKind::ConfigParse,
            "authentication error" => ClientKind::Authentication,
            "error performing TLS handshake" => ClientKind::Tls,
            _ => ClientKind::Other,
        }
    }
}

/// A TLS handshake that failed because the connection ended or broke midway (a server
/// restarting), not because of what either side said: rustls' own verdicts come wrapped in an
/// `io::Error` too, but as its inner error, with kind `InvalidData`.
fn tls_cut_short(e: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind::*;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
            ) && io
                .get_ref()
                .is_none_or(|inner| !inner.is::<rustls::Error>())
        })
}

/// True for failures of the connection itself (as opposed to an SQL error on a live one).
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // tokio-postgres keeps its error kinds private; the socket's own failures (its `Io` and
        // `Connect` kinds) are the ones that carry an `io::Error`, never a server's answer.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn os_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The password, from (in order) the password file, `PGPASSWORD`, then `PGPASSFILE` or
/// `~/.pgpass` entries matching host, port, database and user. Errors never quote the file.
fn password(url: &PgUrl, config: &tokio_postgres::Config) -> Result<Option<String>, String> {
    if let Some(path) = &url.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        let pw = text.lines().next().unwrap_or_default().to_string();
        if pw.is_empty() {
            return Err(format!("the password file {} is empty", path.display()));
        }
        return Ok(Some(pw));
    }
    if let Some(pw) = env_nonempty("PGPASSWORD") {
        return Ok(Some(pw));
    }
    let passfile = env_nonempty("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env_nonempty("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(text) = passfile.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Ok(None);
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    Ok(pgpass_lookup(&text, &host, &port, db, user))
}

/// One `host:port:database:user:password` line per entry, `*` matching anything, `\` escaping.
fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let want = [host, port, db, user];
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn tls_config(mode: SslMode, root_cert: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match root_cert {
        Some(path) => root_store(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    // libpq semantics: `require` checks the chain only when a CA file is given.
    let check = match (mode, root_cert) {
        (SslMode::VerifyFull, _) => {
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
        (SslMode::VerifyCa, _) | (SslMode::Require, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("TLS setup: {e}"))?;
    let verifier = Arc::new(PgVerifier {
        check,
        webpki,
        provider,
    });
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The CA certificates of an `sslrootcert=` file.
fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    // Read first (not `pem_file_iter`) so that an unreadable file says so in its own words;
    // sections of other kinds (a key beside the CA) are skipped, as libpq does.
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("bad sslrootcert {}: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        ));
    }
    Ok(store)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `prefer`/`require` without a CA: encryption only, as libpq does.
    Nothing,
    /// `verify-ca`: a trusted chain, any host name.
    Chain,
}

/// Certificate checks for the sslmodes that do not check everything.
#[derive(Debug)]
struct PgVerifier {
    check: Check,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_matches_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:*:no\ndb:*:app:u\\:x:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "db", "5432", "app", "u:x").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, "elsewhere", "1", "d", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c", "a", "b", "c", "d"), None);
    }

    /// A self-signed EC CA (openssl req -x509 -newkey ec), and the key that came with it.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUK5E73h5ITTEp4MzJ2sOfG2IoXi8wCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRaW5pdGd1YXJkLXRlc3QtY2EwIBcNMjYxMjAxMDgzODA4WhgP
MjEyNjExMDcwODM4MDhaMBwxGjAYBgNVBAMMEWluaXRndWFyZC10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErXut3xB6M9HxhE3QY+jXDiqC9jm8zcTT
wNRqucG/zySd228Y/qhw3ZE8Gjh+IFXrK9LnqqCskR/m5skh5ba9AqNTMFEwHQYD
VR0OBBYEFEU/8MvvYGn0ZByOXzdELqQTRcEuMB8GA1UdIwQYMBaAFEU/8MvvYGn0
ZByOXzdELqQTRcEuMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
AO61ysAIKBkHQxnjazBCDuJH0vuNYijNJeZk2+2EDmm2AiEAr3ovXTiF21ne1RIf
wzOCPMvdImzuZI0AQ9SQCEIslGU=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtumnw9+9qoT4Cw6B
ZpQ7IDp4FgqtGpP/2kja+Q75JTChRANCAASte63fEHoz0fGETdBj6NcOKoL2ObzN
xNPA1Gq5wb/PJJ3bbxj+qHDdkTwaOH4gVesr0ueqoKyRH+bmySHltr0C
-----END PRIVATE KEY-----
";

    #[test]
    fn sslrootcert_files_are_read_with_their_certificates_only() {
        let td = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = td.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        // A key section beside the CA is skipped; both copies of the CA are kept.
        let mixed = write(
            "mixed.pem",
            &format!("{TEST_KEY}{TEST_CA}junk between\n{TEST_CA}"),
        );
        assert_eq!(root_store(&mixed).unwrap().len(), 2);
        assert!(tls_config(SslMode::VerifyFull, Some(&mixed)).is_ok());

        let key_only = write("key.pem", TEST_KEY);
        let err = root_store(&key_only).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let empty = write("empty.pem", "");
        let err = root_store(&empty).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");

        let cut = write("cut.pem", &TEST_CA[..200]);
        let err = root_store(&cut).unwrap_err();
        assert!(err.starts_with("bad sslrootcert"), "{err}");
        // Valid base64, but not a certificate.
        let not_a_cert = write(
            "bogus.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        );
        let err = root_store(&not_a_cert).unwrap_err();
        assert!(err.starts_with("bad certificate in"), "{err}");
    }

    #[test]
    fn tls_configs_build_for_every_mode() {
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert!(tls_config(mode, None).is_ok(), "{mode:?}");
        }
        let err =
            tls_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.contains("cannot read sslrootcert"), "{err}");
    }

    /// A server that accepts the TCP connection and then says nothing (tokio-postgres'
    /// `connect_timeout` does not cover the startup exchange): reported unreachable at the
    /// deadline, not waited for.
    #[tokio::test]
    async fn a_server_that_never_answers_the_startup_is_given_up_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                open.push(sock);
            }
        });
        let url = PgUrl::parse(&format!("postgres://u:pw@127.0.0.1:{port}/db")).unwrap();
        let connector = Connector::new(&url).unwrap();
        let started = Instant::now();
        let res = connector
            .connect_until(started + Duration::from_millis(1500))
            .await;
        let took = started.elapsed();
        held.abort();
        match res {
            Err(StoreError::Unreachable { reason, .. }) => {
                assert!(reason.contains("did not answer within"), "{reason}")
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("connected to a server that never answered"),
        }
        // Ends at the 1.5 s deadline given, not at the 10 s default bound: the only thing the
        // clock must tell apart here, with room for a loaded machine.
        assert!(took < Duration::from_secs(6), "took {took:?}");
    }

    /// A one-connection server on loopback that reads what the client sends first, answers
    /// `reply`, then (unless `hang_up`) keeps the connection open until the client leaves.
    async fn fake_server(reply: Vec<u8>, hang_up: bool) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(&reply).await;
            if !hang_up {
                while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            }
        });
        port
    }

    fn pg_config(port: u16) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(port).user("u").dbname("d");
        c
    }

    async fn plain_connect_error(config: tokio_postgres::Config) -> tokio_postgres::Error {
        let mut config = config;
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        match tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls)).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("connected to a fake server"),
            Err(_) => panic!("the connect did not fail in time"),
        }
    }

    async fn tls_connect_error(port: u16) -> tokio_postgres::Error {
        let mut config = pg_config(port);
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        let tls = MakeRustlsConnect::new(tls_config(SslMode::Require, None).unwrap());
        match tokio::time::timeout(Duration::from_secs(10), config.connect(tls)).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("connected to a fake server"),
            Err(_) => panic!("the connect did not fail in time"),
        }
    }

    /// A backend message: type byte, then a length that counts itself.
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn error_response(sqlstate: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', "FATAL"),
            (b'C', sqlstate),
            (b'M', "refused by the fake"),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        message(b'E', &body)
    }

    fn is_config(r: &Result<String, StoreError>) -> bool {
        matches!(r, Err(StoreError::Config { .. }))
    }

    /// Every client-side kind `classify` tells apart, produced for real, so that a tokio-postgres
    /// upgrade that rewords one (its kinds are private; see `ClientKind`) fails here.
    #[tokio::test]
    async fn client_side_failures_are_classified_by_kind() {
        // Config: no host at all.
        let e = match tokio_postgres::Config::new().connect(NoTls).await {
            Err(e) => e,
            Ok(_) => panic!("connected without a host"),
        };
        assert_eq!(ClientKind::of(&e), ClientKind::Config, "{e}");
        assert!(is_config(&classify("s", &e)));

        // ConfigParse.
        let e = "bogus_option=1"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        assert_eq!(ClientKind::of(&e), ClientKind::ConfigParse, "{e}");
        assert!(is_config(&classify("s", &e)));

        // Config again: the server asks for a password and none was given.
        let port = fake_server(message(b'R', &3u32.to_be_bytes()), false).await;
        let e = plain_connect_error(pg_config(port)).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Config, "{e}");
        assert!(is_config(&classify("s", &e)));

        // Authentication: a method tokio-postgres does not speak (Kerberos V5).
        let port = fake_server(message(b'R', &2u32.to_be_bytes()), false).await;
        let e = plain_connect_error(pg_config(port)).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Authentication, "{e}");
        assert!(is_config(&classify("s", &e)));

        // Tls: sslmode=require and a server that says it has no TLS.
        let port = fake_server(b"N".to_vec(), false).await;
        let e = tls_connect_error(port).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Tls, "{e}");
        assert!(is_config(&classify("s", &e)), "{e}");

        // Tls, but only cut short: the server agrees to TLS and hangs up (a restart). Retried.
        let port = fake_server(b"S".to_vec(), true).await;
        let e = tls_connect_error(port).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Tls, "{e}");
        assert!(tls_cut_short(&e), "{}", error_chain(&e));
        assert!(classify("s", &e).is_ok(), "{}", error_chain(&e));

        // Tls, and rustls' verdict: the answer is not TLS at all.
        let port = fake_server(b"SHTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), false).await;
        let e = tls_connect_error(port).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Tls, "{e}");
        assert!(!tls_cut_short(&e), "{}", error_chain(&e));
        assert!(is_config(&classify("s", &e)), "{}", error_chain(&e));

        // Other: nothing listens on the port (connection refused). Retried.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = plain_connect_error(pg_config(port)).await;
        assert_eq!(ClientKind::of(&e), ClientKind::Other, "{e}");
        assert!(classify("s", &e).is_ok());
    }

    /// Server answers are judged by SQLSTATE, whatever their message says.
    #[tokio::test]
    async fn server_answers_are_classified_by_sqlstate() {
        let port = fake_server(error_response("28P01"), false).await;
        let e = plain_connect_error(pg_config(port)).await;
        match classify("s", &e) {
            Err(StoreError::Config { reason, .. }) => {
                assert!(
                    reason.contains("check the user and the password"),
                    "{reason}"
                )
            }
            other => panic!("28P01 classified as {other:?}"),
        }
        let port = fake_server(error_response("42501"), false).await;
        let e = plain_connect_error(pg_config(port)).await;
        assert!(matches!(
            classify("s", &e),
            Err(StoreError::Forbidden { .. })
        ));
        // Too many connections: overloaded, for the caller to back off and retry while it may
        // wait (not the connect loop's quick retries).
        let port = fake_server(error_response("53300"), false).await;
        let e = plain_connect_error(pg_config(port)).await;
        assert_eq!(e.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
        assert!(matches!(
            classify("s", &e),
            Err(StoreError::Overloaded { .. })
        ));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

//! A private PostgreSQL server run from the installed server binaries: the
//! test harness starts one per test process, `chatd dev` one per checkout.
//!
//! PostgreSQL refuses to run as root, so when this process is root every
//! server command runs as the `postgres` user, and the directories it uses
//! are handed to that user.

use std::{
    ffi::OsStr,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
};

/// What went wrong starting or stopping a private server.
#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    /// No server binaries were found anywhere we looked.
    #[error(
        "no PostgreSQL server binaries found (looked in $CHATD_PG_BIN, `pg_config --bindir` and /usr/lib/postgresql/*/bin): install the `postgresql` package (apt-get install postgresql) or set CHATD_PG_BIN to the directory holding initdb and pg_ctl"
    )]
    BinariesNotFound,
    /// `CHATD_PG_BIN` names a directory without the server binaries.
    #[error(
        "CHATD_PG_BIN={} holds no initdb and pg_ctl: point it at the PostgreSQL server binaries (e.g. /usr/lib/postgresql/15/bin) or unset it",
        .0.display()
    )]
    NotServerBinaries(PathBuf),
    /// We are root and there is no `postgres` user to run the server as.
    #[error(
        "running as root, but there is no `postgres` user to run PostgreSQL as: create one or run as a normal user"
    )]
    NoPostgresUser,
    /// A server command failed; its output is included.
    #[error("{command} failed: {output}")]
    Command {
        /// What was run.
        command: String,
        /// Its stderr/stdout, or the spawn error.
        output: String,
    },
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, PgServerError>;

/// Appended once to `postgresql.conf`; our settings live in `chatd.conf`.
const INCLUDE_LINE: &str = "include_if_exists = 'chatd.conf'";

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries: `$CHATD_PG_BIN`, then `pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/<version>/bin`.
    pub fn locate() -> Result<Self> {
        Self::locate_with(std::env::var_os("CHATD_PG_BIN"))
    }

    /// [`Self::locate`] with the value of `CHATD_PG_BIN` given: when set, it
    /// is the only place looked at.
    pub fn locate_with(chatd_pg_bin: Option<std::ffi::OsString>) -> Result<Self> {
        let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        if let Some(dir) = chatd_pg_bin {
            let dir = PathBuf::from(dir);
            return if has_server(&dir) {
                Ok(Self { bin_dir: dir })
            } else {
                Err(PgServerError::NotServerBinaries(dir))
            };
        }
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if output.status.success() && has_server(&dir) {
                return Ok(Self { bin_dir: dir });
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                has_server(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bin_dir)| Self { bin_dir })
            .ok_or(PgServerError::BinariesNotFound)
    }

    /// Path of one binary.
    pub fn path(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The user server commands run as: `postgres` when we are root, else ourselves.
#[derive(Debug, Clone, Copy)]
pub struct ServerUser {
    ids: Option<(u32, u32)>,
}

impl ServerUser {
    /// Works out who the server runs as.
    pub fn detect() -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self { ids: None });
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(PgServerError::NoPostgresUser)?;
        Ok(Self {
            ids: Some((user.uid.as_raw(), user.gid.as_raw())),
        })
    }

    /// A command that runs as this user.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.ids {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        command
    }

    /// Writes `contents` to `path` and makes this user its owner.
    pub fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        fs::write(path, contents).map_err(|source| PgServerError::Io {
            what: "write",
            path: path.to_owned(),
            source,
        })?;
        self.chown(path)
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                PgServerError::Io {
                    what: "chown",
                    path: path.to_owned(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Creates `dir` (and parents) and makes this user its owner.
    pub fn create_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|source| PgServerError::Io {
            what: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        self.chown(dir)
    }
}

/// Runs `command`, turning a failure into an error that carries its output.
fn run(mut command: Command) -> Result<String> {
    let description = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| PgServerError::Command {
            command: description.clone(),
            output: err.to_string(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(PgServerError::Command {
            command: description,
            output: text.trim().to_owned(),
        })
    }
}

/// Starts a shell that cleans up after this process, however it ends: it
/// blocks reading a pipe whose write end only we hold (the returned stdin;
/// keep it for as long as the server should live), and on EOF stops the
/// server under `root` and, with `remove`, deletes `root`. The kernel closes
/// the pipe on exit, panic and SIGKILL alike.
pub fn stop_when_gone(
    binaries: &PgBinaries,
    user: ServerUser,
    root: &Path,
    remove: bool,
) -> Result<ChildStdin> {
    user.create_dir(root)?;
    let script = r#"cat >/dev/null
"$1" -D "$2/data" -m immediate -w -t 30 stop >/dev/null 2>&1
if [ "$3" = remove ]; then rm -rf "$2"; fi"#;
    let mut command = user.command("sh");
    command
        .args(["-c", script, "chatd-pg-reaper"])
        .arg(binaries.path("pg_ctl"))
        .arg(root)
        .arg(if remove { "remove" } else { "keep" })
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spawn_error = |err: std::io::Error| PgServerError::Command {
        command: "sh (the cleanup process)".to_owned(),
        output: err.to_string(),
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    child
        .stdin
        .take()
        .ok_or_else(|| spawn_error(std::io::Error::other("the cleanup process has no stdin")))
}

/// A port nobody listens on right now on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| PgServerError::Io {
        what: "bind",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| PgServerError::Io {
            what: "local address of",
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

/// Settings written into `postgresql.conf` of a private server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Turn fsync and friends off (tests: data is thrown away anyway).
    pub durability_off: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// Roles that must log in with a password over TCP; everyone else is trusted.
    /// (Tests use one to check how a wrong password is reported.)
    pub password_roles: Vec<String>,
    /// More settings as `(name, value)`, written after ours (so they win):
    /// `chatd-loadtest bench --pg-setting` uses them to look inside a run
    /// (`auto_explain`, logging) without a second way to start a server.
    pub extra: Vec<(String, String)>,
}

/// A private PostgreSQL cluster in a directory of its own: `data/` holds the
/// cluster, `socket/` its Unix socket, `server.log` its log.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    binaries: PgBinaries,
    user: ServerUser,
    root: PathBuf,
    port: u16,
}

impl LocalPostgres {
    /// Prepares (initdb, configuration) a cluster under `root` unless one is
    /// there already; a cluster found there keeps its data, and gets `settings`.
    pub fn init(
        binaries: PgBinaries,
        user: ServerUser,
        root: &Path,
        settings: &ServerSettings,
    ) -> Result<Self> {
        let server = Self {
            binaries,
            user,
            root: root.to_owned(),
            port: settings.port,
        };
        user.create_dir(root)?;
        user.create_dir(&server.socket_dir())?;
        if !server.data_dir().join("PG_VERSION").is_file() {
            user.create_dir(&server.data_dir())?;
            let mut initdb = user.command(server.binaries.path("initdb"));
            initdb
                .arg("-D")
                .arg(server.data_dir())
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .current_dir(root);
            run(initdb)?;
        }
        server.write_settings(settings)?;
        Ok(server)
    }

    fn write_settings(&self, settings: &ServerSettings) -> Result<()> {
        let mut conf = format!(
            "# Written by chatd at every start; edits are overwritten.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = {max_connections}\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             pg_stat_statements.track = top\n\
             log_min_messages = warning\n\
             log_min_error_statement = panic\n",
            port = settings.port,
            socket = self.socket_dir().display(),
            max_connections = settings.max_connections,
        );
        if settings.durability_off {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        for (name, value) in &settings.extra {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let data = self.data_dir();
        self.user.write_file(&data.join("chatd.conf"), &conf)?;
        let main_conf = data.join("postgresql.conf");
        let main = fs::read_to_string(&main_conf).map_err(|source| PgServerError::Io {
            what: "read",
            path: main_conf.clone(),
            source,
        })?;
        if !main.contains(INCLUDE_LINE) {
            self.user
                .write_file(&main_conf, &format!("{main}\n{INCLUDE_LINE}\n"))?;
        }
        let mut hba = String::from("# Written by chatd at every start.\nlocal all all trust\n");
        for role in &settings.password_roles {
            hba.push_str(&format!("host all {role} 127.0.0.1/32 scram-sha-256\n"));
        }
        hba.push_str("host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n");
        self.user.write_file(&data.join("pg_hba.conf"), &hba)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Where the server puts its Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The directory holding everything of this cluster.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// The user the server runs as.
    pub fn user(&self) -> ServerUser {
        self.user
    }

    /// A URL for database `dbname` as the `postgres` superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Creates database `dbname` unless it exists, with `pg_stat_statements`
    /// installed in it: the server preloads the library, and the extension
    /// makes its view readable there (the load test reads it).
    pub async fn ensure_database(
        &self,
        dbname: &str,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let connect = |url: String| async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        };
        let admin = connect(self.url("postgres")).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{dbname}\""))
                .await?;
        }
        connect(self.url(dbname))
            .await?
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<String> {
        let mut command = self.user.command(self.binaries.path("pg_ctl"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(args)
            .current_dir(&self.root);
        run(command)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "start"])
            .map(drop)
            .map_err(|err| match err {
                PgServerError::Command { command, output } => PgServerError::Command {
                    command,
                    output: format!("{output}\n{}", self.log_tail()),
                },
                other => other,
            })
    }

    /// Stops the server (fast shutdown: sessions are cut, data is kept).
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"])
            .map(drop)
    }

    /// Stop then start, on the same port and data.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// True when a server runs on this data directory.
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).is_ok()
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_one_clear_sentence() {
        let message = PgServerError::BinariesNotFound.to_string();
        assert!(
            message.contains("install the `postgresql` package"),
            "{message}"
        );
        assert!(message.contains("CHATD_PG_BIN"), "{message}");
        assert_eq!(message.lines().count(), 1);
    }

    #[test]
    fn a_chatd_pg_bin_without_binaries_is_named() {
        let empty = std::env::temp_dir().join(format!("chatd-no-pg-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = PgBinaries::locate_with(Some(empty.clone().into_os_string())).unwrap_err();
        fs::remove_dir_all(&empty).unwrap();
        let message = err.to_string();
        assert!(matches!(err, PgServerError::NotServerBinaries(_)));
        assert!(
            message.starts_with(&format!("CHATD_PG_BIN={} holds no initdb", empty.display())),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1);
    }
}
